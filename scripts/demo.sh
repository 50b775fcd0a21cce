#!/usr/bin/env bash
# The main job, end to end on real data: set up a venv, install cxrad, then
# ingest -> split -> preprocess -> train -> evaluate -> predict.
#   DATA=/path/to/datasets bash scripts/demo.sh     (default: ../shared/data)
# Other knobs: WORK (work folder), RUN (run folder), MODEL, EPOCHS, LIMIT_TRAIN, WORKERS.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
WORK=${WORK:-work/demo}
RUN=${RUN:-runs/demo}
MODEL=${MODEL:-cxr-fast}
EPOCHS=${EPOCHS:-3}
LIMIT_TRAIN=${LIMIT_TRAIN:-3000}
WORKERS=${WORKERS:-$(nproc)}

if [ ! -d "$DATA" ]; then
  echo "error: data folder '$DATA' not found; point DATA at your datasets (DATA=/path bash scripts/demo.sh)" >&2
  exit 2
fi
[ -x .venv/bin/cxrad ] || python3 -m venv .venv
.venv/bin/pip install -q -e .
cx=.venv/bin/cxrad
start=$(date +%s)
$cx info
$cx ingest "$DATA" --out "$WORK" --workers "$WORKERS"
$cx split "$WORK" --keep-official
$cx preprocess "$WORK" --workers "$WORKERS"
$cx train "$WORK" --model "$MODEL" --out "$RUN" --epochs "$EPOCHS" --limit-train "$LIMIT_TRAIN"
$cx evaluate "$RUN" --data "$WORK" --split test
# Predict one real test image with the model just trained, with Grad-CAM heatmaps.
img=$(.venv/bin/python -c "import pandas as pd; df = pd.read_parquet('$WORK/manifest.parquet'); print(df[(df.split == 'test') & (df.status == 'ok')].path.iloc[0])")
$cx predict "$img" --model "$RUN" --heatmaps "$RUN/heatmaps"
echo "demo finished in $(( $(date +%s) - start )) s: report at $RUN/eval/report.html, metrics at $RUN/eval/metrics.json" >&2
