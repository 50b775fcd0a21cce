"""Stage 7, train: hardware settings (precision, strategy, threads, workers) and opening the cache."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cxrad.errors import CacheError, TrainError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hardware:
    """What :func:`hardware` decided, recorded in the run config."""

    name: str
    gpu: bool
    precision: str
    strategy: str
    workers: int


def cpu_threads() -> int:
    """CPUs this process may use (its affinity mask, which respects taskset/cgroups), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _device_count(devices: int | str | Sequence[int]) -> int:
    if isinstance(devices, int):
        return devices if devices > 0 else torch.cuda.device_count()
    if isinstance(devices, str):
        return torch.cuda.device_count() if devices == "auto" else len(devices.split(","))
    return len(devices)


def hardware(
    accelerator: str,
    devices: int | str | Sequence[int],
    num_nodes: int,
    precision: str | None,
    workers: int | None,
    threads: int | None = None,
) -> Hardware:
    """Pick precision, strategy, threads and loader workers for the requested hardware.

    GPUs train in mixed precision (bf16 where the card supports it: same range as float32, no
    loss scaling; else fp16 with scaling); several devices or nodes use DDP. On a CPU, precision
    stays 32 and torch uses every CPU the process may run on, unless ``threads`` says otherwise
    (on a machine shared with other jobs, fewer threads than cores is often faster).
    """
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise TrainError(
            f"--accelerator {accelerator} but no CUDA GPU is visible; use --accelerator cpu"
        )
    if precision is None:
        if gpu:
            precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        else:
            precision = "32-true"
    n = _device_count(devices) if gpu else (devices if isinstance(devices, int) else 1)
    strategy = "ddp" if (n > 1 or num_nodes > 1) else "auto"
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    elif not gpu:
        torch.set_num_threads(cpu_threads())
    if workers is None:
        workers = min(4, max(cpu_threads() // 2, 1)) if gpu else 0
    name = torch.cuda.get_device_name(0) if gpu else "cpu"
    logger.info(
        "hardware: %s, precision %s, strategy %s, %d threads, %d loader workers",
        name, precision, strategy, torch.get_num_threads(), workers,
    )  # fmt: skip
    return Hardware(
        name=name, gpu=gpu, precision=str(precision), strategy=strategy, workers=workers
    )


def open_work_cache(
    work: str | Path, size: int, mode: str, normalise: str = "none", crop: str = "none"
) -> Any:
    """Open ``WORK``'s preprocessing cache for ``(size, mode, normalise, crop)``, or say how to build it.

    Raises:
        TrainError: no such cache; names the ``cxrad preprocess`` command that builds it.
    """
    from cxrad.preprocess import PreprocessConfig, open_cache

    config = PreprocessConfig(size=size, mode=mode, crop=crop, normalise=normalise)  # type: ignore[arg-type]  # bad values raise
    fix = f"run `{config.command(work)}` first"
    try:
        return open_cache(work, config)
    except FileNotFoundError as e:
        raise TrainError(
            f"no preprocessed cache in {work} for size {size}, mode {mode}; {fix}"
        ) from e
    except CacheError as e:
        raise TrainError(str(e) if "cxrad preprocess" in str(e) else f"{e}; {fix}") from e


def git_commit(cwd: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the working directory, or None outside a repository."""
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def jsonable_devices(devices: Any) -> Any:
    """Devices as JSON can hold them (a tuple of ids becomes a list), for the run config."""
    return list(devices) if isinstance(devices, (list, tuple)) else devices


def parse_devices(text: str) -> int | str | list[int]:
    """CLI ``--devices``: ``auto``, a count (``2``), or ids (``0,1``)."""
    text = text.strip()
    if "," in text:
        return [int(t) for t in text.split(",") if t.strip()]
    return int(text) if text.lstrip("-").isdigit() else text
