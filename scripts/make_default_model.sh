#!/usr/bin/env bash
# Reproduce the shipped default model (MODEL_CARD.md) from ../shared/data, on this machine's CPU:
# ingest -> split (official pediatric test kept out of train/val) -> preprocess -> train -> evaluate,
# then copy the run's model.safetensors + config.json into src/cxrad/assets/default/.
#   DATA=/path/to/datasets EPOCHS=8 bash scripts/make_default_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
WORK=${WORK:-work/full}
RUN=${RUN:-runs/default-v2}
EPOCHS=${EPOCHS:-8}
cx=.venv/bin/cxrad
$cx ingest "$DATA" --out "$WORK"
$cx split "$WORK" --keep-official
$cx preprocess "$WORK" --size 192
$cx train "$WORK" --model cxr-fast --out "$RUN" --size 192 --augment strong --epochs "$EPOCHS" --patience 4 --batch-size 32 --workers 1 --no-progress
$cx fit-ood "$RUN" --data "$WORK"
$cx evaluate "$RUN" --data "$WORK" --split test
mkdir -p src/cxrad/assets/default
cp "$RUN/model.safetensors" "$RUN/config.json" "$RUN/ood.safetensors" src/cxrad/assets/default/
