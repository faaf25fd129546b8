#!/usr/bin/env bash
# On the device (after benchmarks/gpu_prepare.sh here): install the carried wheels, unpack the datasets to
# ../shared/datasets and the title-feature caches to benchmarks/scratch/item_text, stand a placeholder of the
# encoder's size and mtime at its path (the cache key matches; nothing reads its bytes, so a cache miss fails
# clearly instead of encoding), then run benchmarks/gpu_confirm.py with DEADLINE seconds from this script's start.
# GPU use and load go to $OUT/monitor.txt every 15 s.
#
#   DEADLINE=540 bash benchmarks/gpu_session.sh --jobs 4 --text_datasets amazon-games
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
(while sleep 15; do
    echo "$(( $(date +%s) - T0 )) s: $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)" \
        "load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/monitor.txt"
done) &
python3 benchmarks/gpu_confirm.py --out "$OUT" --deadline $(( ${DEADLINE:-540} - $(date +%s) + T0 )) "$@" \
    > "$OUT/confirm.log" 2>&1
rc=$?
kill %1 2>/dev/null
grep -v "^\[compare\] [A-Z]" "$OUT/confirm.log" | tail -40
exit $rc
