"""Stage 10, cli: ``cxrad train WORK --task one-class --out RUN``: the one-class branch of train."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cxrad.cli.app import err_console
from cxrad.errors import TrainError
from cxrad.options import suggest

TASKS = ("multilabel", "one-class")


def train_one_class_cli(
    task: str,
    work: Path,
    out: Path,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    size: int,
    mode: str,
    seed: int,
    limit_train: int | None,
    threads: int | None,
    augment: Any,
    density: str = "pooled",
    proxy: str = "cutpaste",
) -> None:
    """Train a one-class run and print its one-line summary (the CLI's ``--task one-class``)."""
    from cxrad.models import read_config
    from cxrad.train.oneclass import train_one_class

    if task not in TASKS:
        raise TrainError(
            f"unknown task {task!r}; expected one of {', '.join(TASKS)}.{suggest(task, TASKS)}"
        )
    t0 = time.perf_counter()
    run = train_one_class(
        work, out, max_epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        size=size, mode=mode, seed=seed, limit_train=limit_train, threads=threads,
        augment=augment, density=density, proxy=proxy,
    )  # fmt: skip
    cfg = read_config(run).to_dict()
    sel = cfg["selection"]
    err_console.print(
        f"[bold green]trained[/] one-class run on {cfg['data']['n_train']} NORMAL films (no "
        f"abnormal label read): {sel.get('candidate', 'pooled')} density, best epoch "
        f"{sel['best_epoch']}, label-free proxy AUROC "
        f"{sel['proxy_auroc']:.4f} on {cfg['data']['n_val']} normal val films in "
        f"{time.perf_counter() - t0:.0f}s -> {run}",
        highlight=False,
    )
