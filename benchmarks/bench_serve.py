"""Benchmark: `cxrad serve` under a bounded load on localhost: throughput, latency, 5xx, memory.

Starts the real server (`python -m cxrad serve`) as a subprocess on a free port, warms it up,
then sends ``--requests`` uploads at ``--concurrency`` in flight without heatmaps and
``--heatmap-requests`` with ``?heatmaps=true``. Films: real test films from ../shared/data
(pediatric pneumonia test split, rotating) when present, else synthetic ones. Records
throughput, p50/p95/p99 latency, status counts, and the server's resident memory after
warm-up and at the end (psutil, server process and its children).

    .venv/bin/python benchmarks/bench_serve.py --requests 1000 --heatmap-requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CXRAD_SHARED_DATA", REPO.parent / "shared" / "data"))


def films(n: int) -> tuple[list[tuple[str, bytes]], str]:
    folder = DATA / "kaggle-pediatric-pneumonia" / "chest_xray" / "test"
    paths = sorted(folder.glob("*/*.jpeg"))[::13][:n] if folder.is_dir() else []
    if paths:
        return [(p.name, p.read_bytes()) for p in paths], f"{len(paths)} real pediatric test films"
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (512, 512), dtype=np.uint8)).save(buf, "PNG")
        out.append((f"synthetic{i}.png", buf.getvalue()))
    return out, f"{n} synthetic 512 px noise PNGs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(proc: psutil.Process) -> float:
    procs = [proc, *proc.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


async def load(url: str, items: list[tuple[str, bytes]], n: int, conc: int, query: str) -> dict:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    next_i = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < n:
            i, next_i = next_i, next_i + 1
            name, data = items[i % len(items)]
            t = time.perf_counter()
            r = await client.post(url + query, files={"file": (name, data, "image/jpeg")})
            latencies.append(time.perf_counter() - t)
            statuses[r.status_code] += 1

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(conc)))
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {
        "requests": n,
        "concurrency": conc,
        "seconds": round(wall, 1),
        "throughput_rps": round(n / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "statuses": dict(statuses),
        "5xx": sum(v for k, v in statuses.items() if k >= 500),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--heatmap-requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight (client)")
    ap.add_argument("--server-concurrency", type=int, default=2, help="model threads (server)")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--films", type=int, default=40)
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()

    items, what = films(args.films)
    port = free_port()
    cmd = [sys.executable, "-m", "cxrad", "serve", "--model", args.model, "--port", str(port),
           "--backend", args.backend, "--concurrency", str(args.server_concurrency),
           "--queue", str(max(args.concurrency, 8))]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = psutil.Process(server.pid)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("the server did not become ready")
        url = base + "/v1/predict"
        warm = asyncio.run(load(url, items, args.warmup, args.concurrency, "?heatmaps=true"))
        rss_warm = rss_mb(proc)
        plain = asyncio.run(load(url, items, args.requests, args.concurrency, ""))
        heat = asyncio.run(
            load(url, items, args.heatmap_requests, args.concurrency, "?heatmaps=true")
        )
        rss_end = rss_mb(proc)
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {
        "films": what,
        "model": args.model,
        "backend": args.backend,
        "cpu_cores": len(os.sched_getaffinity(0)),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "warmup": warm,
        "plain": plain,
        "heatmaps": heat,
        "rss_after_warmup_mb": round(rss_warm, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_change_pct": round(100 * (rss_end - rss_warm) / rss_warm, 1),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
