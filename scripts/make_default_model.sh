#!/usr/bin/env bash
# Reproduce the shipped default model (MODEL_CARD.md) from ../shared/data, on this machine's CPU:
# ingest -> split (official pediatric test kept out of train/val) -> preprocess -> train -> evaluate,
# then copy the run's model.safetensors + config.json into src/cxrad/assets/default/.
#   DATA=/path/to/datasets EPOCHS=6 bash scripts/make_default_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
WORK=${WORK:-work/full}
RUN=${RUN:-runs/default-cpu}
EPOCHS=${EPOCHS:-6}
cx=.venv/bin/cxrad
$cx ingest "$DATA" --out "$WORK"
$cx split "$WORK" --keep-official
$cx preprocess "$WORK"
$cx train "$WORK" --model cxr-fast --out "$RUN" --epochs "$EPOCHS" --patience 4 --batch-size 32 --no-progress
$cx evaluate "$RUN" --data "$WORK" --split test
mkdir -p src/cxrad/assets/default
cp "$RUN/model.safetensors" "$RUN/config.json" src/cxrad/assets/default/
