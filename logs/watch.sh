#!/bin/bash
# resume the paused trainings as the dense seeds finish (one training per core)
cont() { for pid in $(pgrep -f "$1"); do kill -CONT $pid; done; echo "$(date) resumed $1"; }
done1=0; done2=0
while [ $done1 = 0 ] || [ $done2 = 0 ]; do
  if [ $done1 = 0 ] && ! pgrep -f "output_dir runs/dyck-seed1" >/dev/null; then cont "output_dir runs/code-seed1"; done1=1; fi
  if [ $done2 = 0 ] && ! pgrep -f "output_dir runs/dyck-seed2" >/dev/null; then cont "output_dir runs/dyck-sparse-seed1"; cont "kmeans_ceiling.py"; done2=1; fi
  sleep 10
done
