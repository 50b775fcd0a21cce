"""Benchmark, stage 1 ingest: adapter throughput and hashing throughput (images/s).

Baseline: reading the same files' bytes in one process (what hashing cannot beat), measured in
the same process right before, so the ratios are robust to a noisy shared machine.

    .venv/bin/python benchmarks/bench_ingest.py --data ../shared/data --workers 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from cxrad.ingest import ingest
from cxrad.manifest.hashing import add_hashes


def _timed(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=repo.parent / "shared" / "data")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=1, help="runs per measurement (median)")
    ap.add_argument("--limit", type=int, default=0, help="hash only the first N ok rows (0 = all)")
    args = ap.parse_args()

    roots = sorted(args.data.iterdir())
    t_adapt, (df, _summary) = _timed(lambda: ingest(roots, hash_images=False), args.repeats)
    ok = df[df["status"] == "ok"]
    if args.limit:
        ok = ok.iloc[: args.limit]
    n = len(ok)
    print(f"adapters: {len(df)} rows ({n} ok) in {t_adapt:.2f} s = {len(df) / t_adapt:,.0f} rows/s")

    paths = ok["path"].tolist()
    t_raw, _ = _timed(lambda: sum(len(Path(p).read_bytes()) for p in paths), args.repeats)
    print(f"baseline raw read (1 process): {n / t_raw:,.0f} images/s ({t_raw:.2f} s)")
    print("| step | workers | images/s | seconds | vs raw read |")
    print("|---|---|---|---|---|")
    print(f"| raw file read (baseline) | 1 | {n / t_raw:,.0f} | {t_raw:.2f} | 1.00 |")
    for w in args.workers:
        t, _ = _timed(lambda w=w: add_hashes(ok, workers=w), args.repeats)
        print(f"| sha1 + phash | {w} | {n / t:,.0f} | {t:.2f} | {t / t_raw:.1f}x slower |")
    print(
        f"| ingest adapters (no pixels) | 1 | {len(df) / t_adapt:,.0f} rows/s | {t_adapt:.2f} | - |"
    )


if __name__ == "__main__":
    main()
