#!/bin/bash
cd /work/clean
RUN="env HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False TRANSFORMERS_NO_ADVISORY_WARNINGS=1 MPLBACKEND=Agg OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 TQDM_MININTERVAL=20 .venv/bin/hf-illusions"
for args in "dyck --model checkpoints/dyck-sparse --out reports/dyck-sparse --sweep seed" "code --sweep seed" "dyck --model checkpoints/dyck-seed1 --out reports/dyck-seed1 --sweep seed" "dyck --model checkpoints/dyck-seed2 --out reports/dyck-seed2 --sweep seed"; do
  echo "$(date +%T) start $args"; /usr/bin/time -f "%e s" $RUN reproduce $args > /work/main/logs/chainB-$(echo $args | tr ' /' '__' | cut -c1-40).log 2>&1; echo "$(date +%T) done $args rc=$?"
done
