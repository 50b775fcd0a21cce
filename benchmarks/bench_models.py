"""Stage 6, models benchmark: training throughput, eval latency, parameters and FLOPs per model.

For every selected registered model at ``--size`` px (256 by default): training throughput in
images/s (forward + backward + AdamW step on random data, warm-up steps then the median of
``--steps`` timed steps), eval latency at batch 1 (p50/p95 ms) and parameters/FLOPs. Ratios are
against ``seed-fcn``, always measured first in the same process. On a shared machine, ``--rounds``
repeats the whole sweep and keeps each model's best round (highest throughput, lowest
latency), as ``timeit`` keeps the minimum: interference only ever slows a run down.

Example:
    .venv/bin/python benchmarks/bench_models.py --steps 5 --threads 2
    .venv/bin/python benchmarks/bench_models.py --device cuda --amp --steps 20
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cxrad.models import count_parameters, create_model, list_models

BASELINE = "seed-fcn"


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[object]:
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_throughput(
    model: nn.Module,
    batch: int,
    size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    amp: bool,
) -> float:
    """Median images/s of full training steps on random data."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, size, size, generator=g).to(device)
    y = (torch.rand(batch, 17, generator=g) > 0.8).float().to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            out = model(x)
        loss = nn.functional.binary_cross_entropy_with_logits(out.float(), y[:, : out.shape[1]])
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    times = [_timed(step, device) for _ in range(steps)]
    return batch / statistics.median(times)


def eval_latency(
    model: nn.Module, size: int, iters: int, device: torch.device, amp: bool
) -> tuple[float, float]:
    """p50 and p95 milliseconds for one image, in eval mode under inference_mode."""
    model.eval()
    x = torch.rand(1, 1, size, size).to(device)

    def run() -> None:
        with torch.inference_mode(), _autocast(device, amp):
            model(x)

    for _ in range(max(3, iters // 10)):
        run()
    ms = sorted(_timed(run, device) * 1e3 for _ in range(iters))
    return ms[len(ms) // 2], ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]


def gflops(model: nn.Module, size: int) -> float:
    """Forward GFLOPs for one image (a multiply-add counts 2), via PyTorch's FLOP counter."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.rand(1, 1, size, size, device=next(model.parameters()).device))
    return fc.get_total_flops() / 1e9


def measure(
    name: str, args: argparse.Namespace, batch: int, device: torch.device
) -> dict[str, float]:
    """One model's parameters (M), GFLOPs, train images/s and eval p50/p95 ms."""
    torch.manual_seed(0)
    model = create_model(name).to(device)
    row = {
        "params": count_parameters(model) / 1e6,
        "gflops": gflops(model, args.size),
        "ips": train_throughput(model, batch, args.size, args.steps, args.warmup, device, args.amp),
    }
    row["p50"], row["p95"] = eval_latency(model, args.size, args.iters, device, args.amp)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all", help="comma-separated names, or 'all'")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast for train and eval")
    ap.add_argument("--batch", type=int, default=0, help="train batch (default 16 cpu, 64 cuda)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    ap.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    ap.add_argument("--iters", type=int, default=30, help="timed batch-1 eval runs per model")
    ap.add_argument("--rounds", type=int, default=1, help="sweeps over all models; keep the best")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    batch = args.batch or (64 if device.type == "cuda" else 16)
    names = list_models() if args.models == "all" else args.models.split(",")
    names = [BASELINE] + [n for n in names if n != BASELINE]
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(
        f"# torch {torch.__version__}, device {where}, threads {torch.get_num_threads()}, "
        f"size {args.size}, train batch {batch}, amp {'bf16' if args.amp else 'off'}, "
        f"steps {args.steps} (+{args.warmup} warm-up), eval iters {args.iters}, "
        f"rounds {args.rounds}",
        flush=True,
    )
    best: dict[str, dict[str, float]] = {}
    for rnd in range(args.rounds):
        for name in names:
            row = measure(name, args, batch, device)
            print(
                f"#   round {rnd + 1} {name}: {row['ips']:.1f} img/s, p50 {row['p50']:.1f} ms",
                flush=True,
            )
            if name not in best:
                best[name] = row
            else:
                b = best[name]
                b["ips"] = max(b["ips"], row["ips"])
                b["p50"], b["p95"] = min(b["p50"], row["p50"]), min(b["p95"], row["p95"])
    rows = [{"name": n, **best[n]} for n in names]
    base = rows[0]
    print()
    print(
        "| model | params (M) | GFLOPs/img | train img/s | × seed-fcn | eval p50 ms | eval p95 ms "
        "| p50 × seed-fcn |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['params']:.2f} | {r['gflops']:.2f} | {r['ips']:.1f} "
            f"| {r['ips'] / base['ips']:.2f} | {r['p50']:.1f} | {r['p95']:.1f} "
            f"| {r['p50'] / base['p50']:.2f} |"
        )


if __name__ == "__main__":
    main()
