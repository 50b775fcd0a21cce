"""Stages 5 and 7 benchmark: data loading, augmentation and the Lightning training loop.

Measures, in one process, images/s of:

- loading: PNG decode + resize per image (what the cache avoids; baseline) against the cached
  dataset through a DataLoader;
- augmentation: :class:`cxrad.data.RadiographAugment` batch-wise on the device, against MONAI's
  per-image ``RandAffine`` + ``RandAdjustContrast`` (the usual alternative);
- training: a plain PyTorch step loop (baseline) against ``cxrad.train.train`` (Lightning,
  augmentation, logging, checkpoints), same model, size and batch.

Example:
    .venv/bin/python benchmarks/bench_train.py --size 256 --batch 32 --threads 2
    python3 benchmarks/bench_train.py --device cuda --batch 128 --model cxr-fast
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cxrad.data import CachedDataset, RadiographAugment
from cxrad.models import create_model
from cxrad.train import masked_bce_with_logits

REPO = Path(__file__).resolve().parents[1]


def median_rate(fn: Callable[[], int], repeats: int, device: torch.device) -> float:
    """Median items/s of ``fn`` (which returns how many items it processed)."""
    rates = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        n = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


class ArrayCache:
    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def rows_for(self, df: pd.DataFrame) -> np.ndarray:
        return np.arange(len(df), dtype=np.int64)


def bench_loading(tmp: Path, size: int, batch: int, n: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    mm = np.memmap(tmp / "images.u8", np.uint8, "w+", shape=(n, size, size))
    mm[:] = rng.integers(0, 255, (n, size, size), dtype=np.uint8)
    mm.flush()
    images = np.memmap(tmp / "images.u8", np.uint8, "r", shape=(n, size, size))
    df = pd.DataFrame({"NORMAL": np.zeros(n, np.float32)})
    ds = CachedDataset(df, ArrayCache(images), ["NORMAL"])
    pngs = []
    for i in range(min(n, 64)):
        p = tmp / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (size * 2, size * 2), dtype=np.uint8)).save(p)
        pngs.append(p)

    def decode() -> int:
        for p in pngs:
            img = Image.open(p).convert("L").resize((size, size), Image.Resampling.LANCZOS)
            torch.from_numpy(np.asarray(img, np.float32) / 255)
        return len(pngs)

    def loader_rate(d: torch.utils.data.Dataset) -> Callable[[], int]:
        dl = torch.utils.data.DataLoader(d, batch_size=batch, shuffle=True)

        def run() -> int:
            return sum(len(x) for x, _ in dl)

        return run

    return {
        "PNG decode + resize (baseline)": median_rate(decode, repeats, torch.device("cpu")),
        "CachedDataset (memmap slice)": median_rate(loader_rate(ds), repeats, torch.device("cpu")),
    }


def bench_augment(size: int, batch: int, repeats: int, device: torch.device) -> dict[str, float]:
    x = torch.rand(batch, 1, size, size, device=device)
    aug = RadiographAugment(seed=0)
    out: dict[str, float] = {}
    step = iter(range(10**9))
    aug(x, 0, next(step))
    out[f"RadiographAugment, batch-wise on {device.type}"] = median_rate(
        lambda: len(aug(x, 0, next(step))), repeats, device
    )
    try:
        from monai.transforms import Compose, RandAdjustContrast, RandAffine
    except ImportError:
        return out
    monai = Compose(
        [
            RandAffine(
                prob=1.0,
                rotate_range=0.14,
                scale_range=0.1,
                translate_range=0.1 * size,
                padding_mode="zeros",
            ),
            RandAdjustContrast(prob=1.0, gamma=(0.83, 1.2)),
        ]
    )
    monai.set_random_state(0)
    xc = x.cpu()

    def per_image() -> int:
        for img in xc:
            monai(img)
        return len(xc)

    out["MONAI RandAffine + RandAdjustContrast, per image on cpu"] = median_rate(
        per_image, repeats, torch.device("cpu")
    )
    return out


def bench_training(
    model_name: str, size: int, batch: int, steps: int, device: torch.device, tmp: Path
) -> dict[str, float]:
    sys.path.insert(0, str(REPO / "tests"))
    from cxrad.train import train
    from helpers import make_tiny_work

    # baseline: the bare step loop, no augmentation, no Lightning
    model = create_model(model_name, num_classes=3).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, size, size, device=device)
    y = torch.randint(0, 2, (batch, 3), device=device).float()
    amp = device.type == "cuda"

    def steps_fn() -> int:
        for _ in range(steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = masked_bce_with_logits(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return steps * batch

    steps_fn()
    bare = median_rate(steps_fn, 3, device)

    n_per_class = max(3, (batch * steps) // 2 + 4)  # ~60% of it lands in train
    work = make_tiny_work(tmp / "tw", n_per_class=n_per_class, size=size)
    rates: list[float] = []
    step_rates: list[float] = []

    from lightning.pytorch.callbacks import Callback

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    class Timer(Callback):
        """Images/s of whole epochs (loading, augmentation, validation, checkpoints) and of steps."""

        def on_train_epoch_start(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
            self.t = sync()
            self.steps = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            self.tb = sync()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            self.steps += sync() - self.tb

        def on_train_epoch_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
            n = trainer.num_training_batches * batch
            rates.append(n / (sync() - self.t))
            step_rates.append(n / self.steps)

    train(
        work, model=model_name, out=tmp / "run", max_epochs=3, batch_size=batch, size=size,
        progress=False, patience=0, callbacks=[Timer()], threads=torch.get_num_threads(),
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
    )  # fmt: skip
    return {
        f"{model_name}: bare PyTorch step loop (baseline)": bare,
        f"{model_name}: cxrad train, steps (augmentation + step)": statistics.median(
            step_rates[1:]
        ),
        f"{model_name}: cxrad train, whole epochs (+ validation, checkpoints)": statistics.median(
            rates[1:]
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n", type=int, default=512, help="images in the synthetic cache")
    ap.add_argument("--steps", type=int, default=4, help="training steps per timing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="cxr-fast")
    ap.add_argument("--skip", nargs="*", default=[], choices=["loading", "augment", "training"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(0)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print(f"# {name}; size {args.size}, batch {args.batch}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sections = []
        if "loading" not in args.skip:
            sections.append(
                ("loading", bench_loading(tmp, args.size, args.batch, args.n, args.repeats))
            )
        if "augment" not in args.skip:
            sections.append(
                ("augmentation", bench_augment(args.size, args.batch, args.repeats, device))
            )
        if "training" not in args.skip:
            sections.append(
                (
                    "training",
                    bench_training(args.model, args.size, args.batch, args.steps, device, tmp),
                )
            )
    print("| stage | what | images/s | vs baseline |")
    print("|---|---|---|---|")
    for section, rates in sections:
        base = next(iter(rates.values()))
        for what, r in rates.items():
            print(f"| {section} | {what} | {r:,.0f} | {r / base:.2f}x |")


if __name__ == "__main__":
    main()
