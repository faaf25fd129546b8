#!/usr/bin/env bash
# FLR (all positions) and SASRecAllPos on a GPU machine, tuned with the same budget: TRIALS draws each on the first
# seed, the best on the other two seeds; JOBS runs side by side per model (both models at once: 2 x JOBS processes
# sharing the one GPU). Each run stops at BUDGET seconds of training or at RecBole's early stopping.
# Writes benchmarks/results/compare-<DATASET>-gpu.{json,md,png} and its section of docs/benchmarks.md.
#
#   bash benchmarks/gpu_tuning.sh                                  # ml-1m, 4 trials, 180 s per run
#   DATASET=amazon-games BUDGET=300 bash benchmarks/gpu_tuning.sh
set -u
DATASET=${DATASET:-ml-1m}
BUDGET=${BUDGET:-180}
TRIALS=${TRIALS:-4}
JOBS=${JOBS:-4}
DATA_PATH=${DATA_PATH:-../shared/datasets}
mkdir -p benchmarks/scratch
for model in FLR SASRecAllPos; do
    python3 benchmarks/compare.py --append --skip_defaults --trials "$TRIALS" --jobs "$JOBS" --models "$model" \
        --variants allpos --datasets "$DATASET" --data_path "$DATA_PATH" --seeds 2020 2021 2022 \
        --time_budget "$BUDGET" --results_tag=-gpu --scratch "benchmarks/scratch/gpu-$model" \
        > "benchmarks/scratch/gpu-$DATASET-$model.log" 2>&1 &
done
wait
tail -n 4 benchmarks/scratch/gpu-"$DATASET"-*.log
