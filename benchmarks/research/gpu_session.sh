#!/usr/bin/env bash
# On the device, from the repository root (after benchmarks/research/gpu_prepare.sh here): install the carried wheels,
# unpack the datasets to ../shared/datasets and the title-feature caches to benchmarks/scratch/item_text, stand a
# placeholder of the encoder's size and mtime at its path (the cache key matches; nothing reads its bytes, so a cache
# miss fails clearly instead of encoding), then run benchmarks/research/gpu_confirm.py with DEADLINE seconds from this
# script's start. GPU use and load go to $OUT/monitor.txt every 15 s.
#
#   DEADLINE=540 bash benchmarks/research/gpu_session.sh --jobs 4 --text_datasets amazon-games --tag=-h200
#   DEADLINE=540 bash benchmarks/research/gpu_session.sh --plan tuned --jobs 12 --datasets ml-1m amazon-games --tag=-h200-tuned
#   DEADLINE=540 bash benchmarks/research/gpu_session.sh --plan text --datasets ml-1m --tag=-h200-text   # prepare with TEXT_DATASETS=ml-1m
set -u
export PYTHONUNBUFFERED=1
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
if [ -f .devcarry/encoder.txt ]; then
    read -r G SIZE MTIME < .devcarry/encoder.txt
    mkdir -p "$(dirname "$G")" && touch "$(dirname "$G")/__init__.py"
    [ -e "$G" ] || { truncate -s "$SIZE" "$G" && touch -d "@${MTIME:0:-9}.${MTIME: -9}" "$G"; }
    export PYTHONPATH=$PYTHONPATH:$(dirname "$(dirname "$G")")
fi
mkdir -p ../shared/datasets benchmarks/scratch/item_text
tar -xzf .devcarry/datasets.tar.gz -C ../shared/datasets || exit 4
cp .devcarry/item_text/*.pt benchmarks/scratch/item_text/ 2>/dev/null
python3 -c "
import pandas, torch, transformers
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'pandas', pandas.__version__,
      'transformers', transformers.__version__)" | tee "$OUT/env.txt"
# Many small processes on one GPU: time-slicing runs one process's kernels at a time (the last 20-run call kept the GPU
# "busy" at 22-57 s per amazon-games epoch); CUDA MPS lets their kernels run side by side. A user-space daemon that
# leaves the card's settings alone, tried first and dropped if a CUDA call through it fails (MPS=0 skips it).
MODE=time-slicing
if [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control > /dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
    if nvidia-cuda-mps-control -d && timeout 60 python3 -c "import torch; assert torch.ones(8, device='cuda').sum().item() == 8"; then
        MODE=mps
    else
        echo quit | nvidia-cuda-mps-control 2> /dev/null
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    fi
fi
echo "processes share the GPU by: $MODE" | tee -a "$OUT/env.txt"
(while sleep 15; do
    echo "$(( $(date +%s) - T0 )) s: $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)" \
        "load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/monitor.txt"
done) &
python3 benchmarks/research/gpu_confirm.py --out "$OUT" --deadline $(( ${DEADLINE:-540} - $(date +%s) + T0 )) "$@" \
    > "$OUT/confirm.log" 2>&1
rc=$?
kill %1 2>/dev/null
[ "$MODE" = mps ] && { echo quit | nvidia-cuda-mps-control; cp -r /tmp/mps-log "$OUT/" 2> /dev/null; }
grep -v "^\[compare\] [A-Z]" "$OUT/confirm.log" | tail -40
exit $rc
