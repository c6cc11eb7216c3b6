#!/bin/bash
# after each dense seed finishes, start the next training on its core
cd /work/main
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 OMP_NUM_THREADS=1 TQDM_MININTERVAL=30 OMP_WAIT_POLICY=PASSIVE
wait_for() { while pgrep -f "output_dir runs/$1\$" >/dev/null || pgrep -f "output_dir runs/$1 " >/dev/null; do sleep 20; done; }
if [ "$1" = a ]; then
  wait_for dyck-seed1
  .venv/bin/accelerate launch --num_processes 1 --cpu scripts/train.py --task code --seed 1 --output_dir runs/code-seed1 > logs/code-seed1.log 2>&1
else
  wait_for dyck-seed2
  .venv/bin/accelerate launch --num_processes 1 --cpu scripts/train.py --task dyck --weight_sparsity 0.9 --seed 1 --output_dir runs/dyck-sparse-seed1 > logs/dyck-sparse-seed1.log 2>&1
fi
