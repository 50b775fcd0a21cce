"""How much of the code the default tests reach without ../shared/data, against with it.

Counting tests that skip says little (one real-data test may check what ten synthetic ones do),
so this runs the default suite twice under ``coverage``, once with the data and once with
``CXRAD_SHARED_DATA`` pointing nowhere, and reports the lines of ``src/cxrad`` that only the
run with the data reaches. Subprocesses (the CLI kill tests) are not traced, in either run.

Usage:
    python scripts/coverage_without_data.py --out /tmp/cov   # about 12 min on 2 cores
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def traced_run(out: Path, name: str, env: dict[str, str]) -> dict[str, set[int]]:
    """Run the default suite under coverage; the executed lines per file."""
    data, report = out / f"{name}.coverage", out / f"{name}.json"
    env = {**os.environ, **env, "COVERAGE_FILE": str(data)}
    cov = [sys.executable, "-m", "coverage"]
    cmd = [*cov, "run", "--source=src/cxrad", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    with (out / f"{name}.log").open("w") as log:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"{name}: pytest exited {rc}; see {out / f'{name}.log'}")
    subprocess.run([*cov, "json", "-q", "-o", str(report)], cwd=REPO, env=env, check=True)
    files = json.loads(report.read_text())["files"]
    return {f: set(v["executed_lines"]) for f, v in files.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    without = traced_run(args.out, "without_data", {"CXRAD_SHARED_DATA": "/nonexistent"})
    with_data = traced_run(args.out, "with_data", {})
    only = {f: lines - without.get(f, set()) for f, lines in with_data.items()}
    per_file = collections.Counter({f: len(v) for f, v in only.items() if v})
    n_with = sum(map(len, with_data.values()))
    n_only = sum(map(len, only.values()))
    result = {
        "lines_reached_with_data": n_with,
        "lines_reached_without_data": sum(map(len, without.values())),
        "reached_only_with_data": n_only,
        "share_reached_without_data": round(1 - n_only / n_with, 4),
        "only_with_data_per_file": dict(per_file.most_common()),
    }
    (args.out / "coverage_without_data.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
