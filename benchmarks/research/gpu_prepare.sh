#!/usr/bin/env bash
# Here, before a device call: what the GPU image lacks, in two git-ignored folders the call carries (64 MiB in all).
#   .whl/       wheels: recbole 1.2.1, colorlog, texttable, and pandas 2.3.3 with pytz and tzdata (the image's
#               pandas 3 breaks RecBole's loading: setup.py pins pandas<3 for the same reason)
#   .devcarry/  the datasets (tar.gz), the SmolLM2 title-feature caches of TEXT_DATASETS (benchmarks/scratch/item_text,
#               written by any run with item_text_encoder=smollm2), and the encoder's identity (path, size, mtime)
# Then, on the device: bash benchmarks/research/gpu_session.sh [gpu_confirm.py arguments], carry [".devcarry", ".whl"].
#
#   DATASETS="amazon-games ml-1m" TEXT_DATASETS=amazon-games bash benchmarks/research/gpu_prepare.sh
set -eu
DATA_PATH=${DATA_PATH:-../shared/datasets}
DATASETS=${DATASETS:-"amazon-games ml-1m"}
TEXT_DATASETS=${TEXT_DATASETS:-}
PYTHON=${PYTHON:-python}
for d in /.whl/ /.devcarry/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
rm -rf .devcarry && mkdir -p .whl .devcarry/item_text
$PYTHON -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
    recbole==1.2.1 colorlog==4.7.2 texttable==1.7.2 pandas==2.3.3 pytz tzdata
files=()
for d in $DATASETS; do files+=("$d/$d.inter" "$d/$d.item"); done
tar -czf .devcarry/datasets.tar.gz -C "$DATA_PATH" "${files[@]}"
for d in $TEXT_DATASETS; do cp benchmarks/scratch/item_text/"$d"-item-text-*.pt .devcarry/item_text/; done
if [ -n "$TEXT_DATASETS" ]; then
    $PYTHON -c "
import os
from recbole_flr.model.item_text import resolve_encoder
path = os.path.realpath(resolve_encoder('smollm2'))
print(path, os.path.getsize(path), os.stat(path).st_mtime_ns)" > .devcarry/encoder.txt
fi
du -sh .whl .devcarry
