"""Stage 4, preprocess benchmark: cache build throughput vs the decode-only limit, and cache reads.

For each image set (the real 1024 px NIH PNGs, repeated; the pediatric JPEGs), files are copied
to a temp folder with a unique trailing byte pattern (decoders ignore bytes after the image's
end marker) so that every copy has its own sha1 and the cache cannot deduplicate them. Then:

- **decode-only limit**: the same files read and decoded by Pillow (``Image.open().load()``),
  chunked the same way, on a fresh process pool with the same number of processes;
- **preprocess_work**: the full cache build (read, hash, decode, resize, shard, pack, index).

Both are medians of ``--repeats`` runs; the ratio is preprocess / decode-only (goal >= 0.8).
Last, the cache read throughput: a ``torch.utils.data.DataLoader`` over the memmap with random
order (``shuffle=True``), uint8 -> float tensors in [0, 1], as the training loader reads it.

Example:
    .venv/bin/python benchmarks/bench_preprocess.py --workers 2 --nih-copies 40 --pediatric 800
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from cxrad.manifest import make_rows, write_manifest
from cxrad.preprocess import PreprocessConfig, file_sha1, open_cache, preprocess_work
from cxrad.preprocess.cache import CHUNK_SIZE

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def copy_unique(files: list[Path], copies: int, out: Path) -> list[Path]:
    """``copies`` copies of each file, each with distinct trailing bytes (so a distinct sha1)."""
    out.mkdir(parents=True)
    paths = []
    for c in range(copies):
        for f in files:
            p = out / f"{c:03d}-{f.name}"
            p.write_bytes(f.read_bytes() + len(paths).to_bytes(4, "little"))
            paths.append(p)
    return paths


def _decode_chunk(paths: list[str]) -> int:
    for p in paths:
        with Image.open(p) as im:
            im.load()
    return len(paths)


def decode_only(paths: list[Path], workers: int) -> float:
    """Seconds to decode every file with Pillow on a fresh pool (the limit preprocessing is held to)."""
    chunks = [[str(p) for p in paths[i : i + CHUNK_SIZE]] for i in range(0, len(paths), CHUNK_SIZE)]
    t = time.perf_counter()
    if workers == 1:
        n = sum(_decode_chunk(c) for c in chunks)
    else:
        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            n = sum(ex.map(_decode_chunk, chunks))
    assert n == len(paths)
    return time.perf_counter() - t


def build_work(paths: list[Path], work: Path) -> None:
    recs = [
        {"image_id": f"bench/{p.name}", "path": str(p), "status": "ok", "sha1": file_sha1(p)}
        for p in paths
    ]
    write_manifest(make_rows(recs), work)


def preprocess_once(work: Path, config: PreprocessConfig, workers: int) -> float:
    shutil.rmtree(work / "cache", ignore_errors=True)
    t = time.perf_counter()
    s = preprocess_work(work, config, workers=workers)
    dt = time.perf_counter() - t
    assert s.n_failed == 0 and s.n_new == s.n_rows, s
    return dt


def loader_throughput(
    work: Path, config: PreprocessConfig, batch: int, epochs: int, to_float: bool
) -> float:
    """Images/s of a shuffled DataLoader over the cache memmap (uint8 batches, or float in [0, 1])."""
    import torch  # here, so pool workers (which import this script) stay as light as cxrad's

    cache = open_cache(work, config)

    class CacheSet(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(cache)

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.from_numpy(np.array(cache.images[i])).unsqueeze(0)

    dl = torch.utils.data.DataLoader(CacheSet(), batch_size=batch, shuffle=True, num_workers=0)
    rates = []
    for _x in dl:  # warm-up pass: page cache, allocator
        pass
    for _ in range(epochs):
        n, t = 0, time.perf_counter()
        for x in dl:
            if to_float:
                x = x.float().div_(255.0)
            n += x.shape[0]
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def bench_set(name: str, paths: list[Path], root: Path, args: argparse.Namespace) -> Path:
    work = root / f"work-{name}"
    build_work(paths, work)
    config = PreprocessConfig(size=args.size)
    dec, pre = [], []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        dec.append(decode_only(paths, args.workers))
        pre.append(preprocess_once(work, config, args.workers))
    d, p = statistics.median(dec), statistics.median(pre)
    n = len(paths)
    print(
        f"{name:<22} {n:>6} {n / d:>14.1f} {n / p:>16.1f} {d / p:>7.2f}",
        flush=True,
    )
    return work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--nih-copies", type=int, default=100, help="copies of the 8 NIH 1024 px PNGs")
    ap.add_argument("--pediatric", type=int, default=5000, help="pediatric JPEGs to use")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3, help="loader passes over the cache")
    args = ap.parse_args()

    nih = sorted((args.data / "fixtures" / "nih-original-1024").glob("*.png"))
    ped_root = args.data / "kaggle-pediatric-pneumonia" / "chest_xray" / "train"
    ped = sorted(ped_root.glob("*/*.jpeg"))[
        :: max(1, len(list(ped_root.glob("*/*.jpeg"))) // args.pediatric)
    ]
    ped = ped[: args.pediatric]
    if not nih or not ped:
        raise SystemExit(f"real data not found under {args.data}")
    print(f"workers={args.workers} size={args.size} repeats={args.repeats} (medians)")
    print(f"{'set':<22} {'images':>6} {'decode-only/s':>14} {'preprocess/s':>16} {'ratio':>7}")
    with tempfile.TemporaryDirectory(prefix="cxrad-bench-") as tmp:
        root = Path(tmp)
        w_nih = bench_set(
            "nih-1024-png", copy_unique(nih, args.nih_copies, root / "nih"), root, args
        )
        bench_set("pediatric-jpeg", copy_unique(ped, 1, root / "ped"), root, args)
        cfg = PreprocessConfig(size=args.size)
        for to_float in (False, True):
            rate = loader_throughput(w_nih, cfg, args.batch, args.epochs, to_float)
            what = "float [0,1] on CPU" if to_float else "uint8 batches"
            print(
                f"cache read, DataLoader shuffled, batch {args.batch}, 1 process, {args.size}px, "
                f"{what}: {rate:.0f} images/s"
            )


if __name__ == "__main__":
    main()
