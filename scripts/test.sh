#!/usr/bin/env bash
# The tests: set up a venv with the dev tools if needed, then run the default suite
# (everything not marked slow; tests marked `data` skip with a reason without ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] || { python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]'; }
exec .venv/bin/python -m pytest "$@"
