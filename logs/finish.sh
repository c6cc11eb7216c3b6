#!/bin/bash
# finish.sh NAME RUN DATA "COMMAND" "WALL": copy a finished run's model into checkpoints/NAME and write its card
set -euo pipefail
cd /work/main
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE TQDM_DISABLE=1
name=$1 run=$2 data=$3 cmd=$4 wall=$5
test -f runs/$run/final/model.safetensors
mkdir -p checkpoints/$name
cp runs/$run/final/* checkpoints/$name/
cp runs/$run/train_args.json runs/$run/metrics.jsonl checkpoints/$name/
.venv/bin/hf-illusions card model checkpoints/$name --data $data --run runs/$run --command "$cmd" --wall_time "$wall"
echo "finished $name"
