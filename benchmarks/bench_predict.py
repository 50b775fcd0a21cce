"""Stage 9, predict benchmark: single-image latency and batch throughput, eager vs ONNX Runtime.

Measures, for one run (default: the shipped model):

- batch-1 latency p50/p95 on a preprocessed ``(1, 1, S, S)`` tensor, PyTorch eager and ONNX Runtime;
- batch-1 latency end to end from a file (decode + resize + forward), through ``Predictor.predict``;
- batch throughput (images/s) at ``--batch`` on preprocessed tensors;
- the reference point: an untrained DenseNet-121 in eager mode at 224 px, batch 1.

Ratios are eager time / ONNX time (> 1 means ONNX Runtime is faster), measured in the same
process. When the run is missing, a randomly initialised ``--arch`` run is built (said so in
the output): the speed of a network does not depend on its weights.

Example:
    .venv/bin/python benchmarks/bench_predict.py --model default --repeats 100
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxrad.errors import ModelError
from cxrad.models import create_model, list_models, resolve_run, save_run
from cxrad.predict import Predictor, ensure_onnx
from cxrad.predict.backends import OnnxBackend, TorchBackend, cpu_cores

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def timings(fn: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    """Seconds per call, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def get_run(name: str, arch: str, size: int, tmp: Path) -> tuple[Path, bool]:
    """The run to measure, and whether it is a random-weights stand-in."""
    try:
        return resolve_run(name), False
    except ModelError:
        if name != "default":
            raise
    model = create_model(arch, num_classes=14)
    classes = ["ATELECTASIS", "CARDIOMEGALY", "CONSOLIDATION", "EDEMA", "EFFUSION", "EMPHYSEMA"]
    classes += ["FIBROSIS", "INFILTRATION", "MASS", "NODULE", "NORMAL", "PNEUMONIA"]
    classes += ["PNEUMOTHORAX", "TUBERCULOSIS"]
    cfg = {
        "model": {"name": arch, "kwargs": {}},
        "classes": classes,
        "preprocess": {"size": size, "mode": "letterbox"},
        "thresholds": dict.fromkeys(classes, 0.5),
    }
    return save_run(tmp / "run", model, cfg), True


def sample_files(n: int, tmp: Path) -> tuple[list[Path], str]:
    """Real NIH PNGs (256 px) when ../shared/data is here, else synthetic 1024 px PNGs."""
    nih = sorted((DATA / "nih-chestxray14" / "images").glob("*.png"))[:n]
    if nih:
        return nih, "NIH PNGs, 256 px"
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        out.append(tmp / f"synthetic{i}.png")
        Image.fromarray(rng.integers(0, 256, (1024, 1024), dtype=np.uint8)).save(out[-1])
    return out, "synthetic 1024 px PNGs (no ../shared/data)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="run folder or 'default'")
    ap.add_argument("--arch", default="cxr-fast", help="architecture of the stand-in run")
    ap.add_argument("--size", type=int, default=256, help="input size of the stand-in run")
    ap.add_argument("--repeats", type=int, default=50, help="timed batch-1 calls")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32, help="batch size for throughput")
    ap.add_argument("--batch-repeats", type=int, default=5, help="timed batches")
    ap.add_argument("--files", type=int, default=20, help="real files for end-to-end latency")
    ap.add_argument("--threads", type=int, default=0, help="threads (0: all available cores)")
    ap.add_argument("--device", default="cpu", help="torch device for the eager engine")
    ap.add_argument("--no-densenet", action="store_true", help="skip the DenseNet-121 reference")
    args = ap.parse_args()

    threads = args.threads or cpu_cores()
    torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    run, stand_in = get_run(args.model, args.arch, args.size, tmp)
    eager = Predictor.from_run(run, device=args.device)
    onnx_path = ensure_onnx(run)
    engines = {
        "eager": TorchBackend(eager.model, args.device),
        "onnx": OnnxBackend(onnx_path, threads=threads),
    }
    s = eager.preprocess.size
    what = f"{eager.name}" + (" (RANDOM WEIGHTS stand-in: no shipped model)" if stand_in else "")
    print(
        f"model: {what}; run {run}; input {s} px; torch {torch.__version__}; {threads} threads; eager on {args.device}"
    )

    rng = np.random.default_rng(0)
    one = rng.random((1, 1, s, s), dtype=np.float32)
    many = rng.random((args.batch, 1, s, s), dtype=np.float32)
    rows: dict[str, dict[str, float]] = {}
    for name, eng in engines.items():
        lat = timings(lambda eng=eng: eng(one), args.repeats, args.warmup)
        thr = timings(lambda eng=eng: eng(many), args.batch_repeats, 1)
        rows[name] = {
            "p50": pct(lat, 50) * 1e3,
            "p95": pct(lat, 95) * 1e3,
            "ips": args.batch / statistics.median(thr),
        }
    if args.files:
        files, kind = sample_files(args.files, tmp)
        print(f"end-to-end files: {kind}")
        onnx_pred = Predictor(
            eager.model, eager.config, backend="onnx", device=args.device, onnx_path=onnx_path
        )
        for name, pred in (("eager", eager), ("onnx", onnx_pred)):
            it = iter(files * (1 + (args.repeats + args.warmup) // len(files)))
            lat = timings(
                lambda pred=pred, it=it: pred.predict(next(it)), args.repeats, args.warmup
            )
            rows[name]["e2e_p50"] = pct(lat, 50) * 1e3
            rows[name]["e2e_p95"] = pct(lat, 95) * 1e3

    print()
    print(
        "| engine | batch-1 p50 (ms) | batch-1 p95 (ms) | from file p50 (ms) | from file p95 (ms) "
        f"| batch {args.batch} (images/s) |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        e2e = f"{r['e2e_p50']:.1f} | {r['e2e_p95']:.1f}" if "e2e_p50" in r else "– | –"
        print(f"| {eager.name} {name} | {r['p50']:.1f} | {r['p95']:.1f} | {e2e} | {r['ips']:.0f} |")
    if not args.no_densenet and "densenet121" in list_models():
        dn = create_model("densenet121", num_classes=14).eval().to(args.device)
        x = torch.rand(1, 1, 224, 224, device=args.device)

        def dn_call() -> None:
            with torch.inference_mode():
                dn(x).cpu()

        lat = timings(dn_call, max(10, args.repeats // 3), 2)
        print(
            f"| densenet121 eager ({args.device}), 224 px, untrained | {pct(lat, 50) * 1e3:.1f} "
            f"| {pct(lat, 95) * 1e3:.1f} | – | – | – |"
        )
    e, o = rows["eager"], rows["onnx"]
    print()
    print(
        f"ONNX Runtime speed-up over eager: batch-1 p50 x{e['p50'] / o['p50']:.2f}, "
        f"batch {args.batch} x{o['ips'] / e['ips']:.2f}"
        + (f", from file p50 x{e['e2e_p50'] / o['e2e_p50']:.2f}" if "e2e_p50" in e else "")
    )


if __name__ == "__main__":
    main()
