"""Stage 10, cli: ``cxrad train WORK --model NAME --out RUN`` and ``cxrad ensemble RUN... --out RUN``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from cxrad.cli.app import app, err_console, quiet_lightning, writable_folder
from cxrad.errors import TrainError


@app.command()
def train(
    work: Path = typer.Argument(..., help="work folder after `cxrad split` and `cxrad preprocess`"),
    model: str = typer.Option(
        "cxr-fast", "--model", "-m", help="registered model name (`cxrad info`)"
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="run directory to write (model, config, checkpoints, logs)"
    ),
    epochs: int = typer.Option(30, "--epochs", min=1, help="maximum number of epochs"),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="images per batch per device"),
    lr: float = typer.Option(1e-3, "--lr", help="peak learning rate of the one-cycle schedule"),
    weight_decay: float = typer.Option(1e-4, "--weight-decay", help="AdamW weight decay"),
    loss: str = typer.Option(
        "bce",
        "--loss",
        help="bce: multi-label, ignores unannotated labels; softmax: the original single-label loss",
    ),
    size: int = typer.Option(
        256, "--size", help="image side in pixels (must match a `cxrad preprocess` cache)"
    ),
    mode: str = typer.Option(
        "letterbox", "--mode", help="resize mode of the cache: letterbox or stretch"
    ),
    devices: str = typer.Option(
        "auto", "--devices", help="auto, a count (2) or ids (0,1); passed to Lightning"
    ),
    num_nodes: int = typer.Option(
        1, "--num-nodes", min=1, help="nodes for multi-node DDP; passed to Lightning"
    ),
    accelerator: str = typer.Option(
        "auto", "--accelerator", help="auto, cpu, gpu ...; passed to Lightning"
    ),
    precision: str | None = typer.Option(
        None,
        "--precision",
        help="e.g. 32-true, bf16-mixed, 16-mixed (default: mixed on GPU, 32 on CPU)",
    ),
    augment: str = typer.Option(
        "default",
        "--augment",
        help="augmentation preset: default, strong (other site/period at test time), site (default + photometric site-shift changes) or none",
    ),
    seed: int = typer.Option(0, "--seed", help="seeds weights, shuffling and augmentation"),
    limit_train: int | None = typer.Option(
        None,
        "--limit-train",
        min=1,
        help="train on at most N images (seeded subset), for quick runs",
    ),
    hold_out: str = typer.Option(
        "",
        "--hold-out",
        help="SOURCE[,SOURCE]: leave these sources (and films linked to them) out of train and "
        "val; `cxrad evaluate` then reports the site gap on them",
    ),
    normalise: str = typer.Option(
        "none",
        "--normalise",
        help="use the cache built with `cxrad preprocess --normalise` (none, clahe, histeq)",
    ),
    crop: str = typer.Option(
        "none",
        "--crop",
        help="none|lungs. lungs: use the cache built with `cxrad preprocess --crop lungs`; "
        "predict, evaluate, serve and the ONNX export then crop to the lungs too",
    ),
    sampler: str = typer.Option(
        "shuffle",
        "--sampler",
        help="shuffle: each film once per epoch; balanced: each class x source cell equally often",
    ),
    dg: str = typer.Option(
        "none",
        "--dg",
        help="domain generalisation: none, or adversarial (a training-only head predicts each "
        "film's source behind gradient reversal, DANN; the saved model is unchanged)",
    ),
    dg_weight: float = typer.Option(
        0.1, "--dg-weight", help="--dg adversarial: the gradient-reversal factor after DANN's ramp"
    ),
    patience: int = typer.Option(
        8, "--patience", min=0, help="early-stopping patience in epochs (0 = off)"
    ),
    no_resume: bool = typer.Option(
        False,
        "--no-resume",
        help="start from scratch, deleting RUN/checkpoints, instead of resuming",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=0,
        help="data-loader processes (default: 0 on CPU, up to 4 with a GPU)",
    ),
    data_format: str = typer.Option(
        "cache",
        "--data-format",
        help="cache (random access memmap) or webdataset (tar shards from `cxrad preprocess "
        "--format webdataset`, streamed, a disjoint share per DDP rank)",
    ),
    stream_base: str | None = typer.Option(
        None,
        "--stream-base",
        help="folder or URL prefix of the WebDataset shards (e.g. https://host/shards or "
        "'pipe:aws s3 cp s3://bucket/shards'); default WORK/streaming/<config>",
    ),
    strategy: str | None = typer.Option(
        None, "--strategy", help="Lightning strategy, e.g. ddp [default: ddp for >1 device/node]"
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="torch CPU threads (default: every CPU available)"
    ),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="progress bar (default: when stderr is a terminal)"
    ),
    operating_point: str = typer.Option(
        "spec=0.95",
        "--operating-point",
        help="how each class's cut-off (and triage's) is chosen on val: spec=0.95 (95% of "
        "annotated negatives stay below it), sens=0.90, or youden; spec=0.95@source holds the "
        "target on every val source's negatives",
    ),
    task: str = typer.Option(
        "multilabel",
        "--task",
        help="multilabel (findings from labels) or one-class (anomaly detector trained on "
        "NORMAL films only; selected and thresholded without abnormal labels)",
    ),
    density: str = typer.Option(
        "pooled",
        "--density",
        help="one-class only: pooled (one Gaussian on pooled features), patch (PaDiM: one per "
        "location of a stage map) or auto (the proxy chooses)",
    ),
    proxy: str = typer.Option(
        "cutpaste",
        "--proxy",
        help="one-class only: the normal-val proxy that picks checkpoint and density: cutpaste "
        "or blob (a synthetic local opacity); see docs/oneclass.md",
    ),
) -> None:
    """Train a model on WORK's train split; keep the checkpoint with the best val macro AUROC.

    With --task one-class only NORMAL train/val films are read (see docs/oneclass.md); --model,
    --loss, --patience and the hardware options do not apply.

    Resumes from RUN/checkpoints/last.ckpt when present. Writes RUN/model.safetensors and
    RUN/config.json (classes, temperatures and operating points fitted on val, the triage
    decision, manifest hash, git commit).

    Example: cxrad train work --model cxr-fast --out runs/fast --epochs 20
    """
    from cxrad.data import augment_preset
    from cxrad.data.holdout import parse_sources
    from cxrad.models import parse_rule, read_config
    from cxrad.train import parse_devices
    from cxrad.train import train as train_run
    from cxrad.train.domain import check_dg

    aug = augment_preset(augment)  # an unknown name fails before any work starts
    parse_rule(operating_point)
    check_dg(dg, dg_weight)
    if task != "multilabel" and dg != "none":
        raise TrainError("--dg applies to --task multilabel; drop it for --task one-class")
    if task == "multilabel" and (density, proxy) != ("pooled", "cutpaste"):
        raise TrainError("--density and --proxy apply to --task one-class only; drop them")
    if task != "multilabel" and (crop, normalise) != ("none", "none"):
        raise TrainError("--crop and --normalise apply to --task multilabel only; drop them")
    if task != "multilabel" and (hold_out or sampler != "shuffle" or data_format != "cache"):
        # one-class training reads every normal train film from the cache: a held-out source
        # would be trained on without a word
        raise TrainError(
            "--hold-out, --sampler and --data-format apply to --task multilabel only; drop them"
        )
    writable_folder(out, create=False)  # the run lock makes it, and removes it if train is refused
    if task != "multilabel":
        from cxrad.cli.oneclass import train_one_class_cli

        return train_one_class_cli(
            task, work, out, epochs, batch_size, lr, weight_decay, size, mode, seed, limit_train,
            threads, aug, density, proxy,
        )  # fmt: skip
    quiet_lightning()
    t0 = time.perf_counter()
    run = train_run(
        work,
        model=model,
        out=out,
        max_epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        loss=loss,
        size=size,
        mode=mode,
        patience=patience,
        seed=seed,
        devices=parse_devices(devices),
        num_nodes=num_nodes,
        accelerator=accelerator,
        precision=precision,
        workers=workers,
        threads=threads,
        limit_train=limit_train,
        resume=not no_resume,
        progress=sys.stderr.isatty() if progress is None else progress,
        augment=aug,
        operating_point=operating_point,
        data_format=data_format,
        stream_base=stream_base,
        strategy=strategy,
        hold_out=parse_sources(hold_out),
        sampler=sampler,
        normalise=normalise,
        crop=crop,
        dg=dg,
        dg_weight=dg_weight,
    )
    if not (run / "config.json").is_file():  # a non-zero DDP rank: rank 0 reports
        return
    cfg = read_config(run)
    vm = cfg.val_metrics or {}
    err_console.print(
        f"[bold green]trained[/] {cfg.name} on {cfg.extra['data']['n_train']} images: "
        f"best epoch {cfg.extra['best_epoch']}, val macro AUROC {_num(vm.get('macro_auroc'))} "
        f"({len(cfg.classes)} classes, {vm.get('n')} val images) in {time.perf_counter() - t0:.0f}s -> {run}",
        highlight=False,
    )
    _print_decision(cfg)


@app.command()
def ensemble(
    runs: list[Path] = typer.Argument(..., help="two or more trained run directories"),
    data: Path = typer.Option(
        ..., "--data", "-d", help="the work folder the runs were trained on (for val thresholds)"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="ensemble run directory to write"),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="images per inference batch"),
    operating_point: str = typer.Option(
        "spec=0.95",
        "--operating-point",
        help="how each class's cut-off (and triage's) is chosen on val: spec=0.95 (95% of "
        "annotated negatives stay below it), sens=0.90, or youden; spec=0.95@source holds the "
        "target on every val source's negatives",
    ),
) -> None:
    """Average trained runs' probabilities in one model; fit its decisions on val.

    The result is an ordinary run: evaluate, predict and export take it like any other.

    Example: cxrad ensemble runs/s0 runs/s1 runs/s2 --data work --out runs/ens
    """
    from cxrad.models import read_config
    from cxrad.train import ensemble_runs

    writable_folder(out, create=False)  # the run lock makes it, and removes it on a refusal
    t0 = time.perf_counter()
    run = ensemble_runs(runs, data, out, batch_size=batch_size, operating_point=operating_point)
    cfg = read_config(run)
    vm = cfg.val_metrics or {}
    err_console.print(
        f"[bold green]ensembled[/] {len(cfg.extra['members'])} runs: val macro AUROC "
        f"{_num(vm.get('macro_auroc'))} ({vm.get('n')} val images) "
        f"in {time.perf_counter() - t0:.0f}s -> {run}",
        highlight=False,
    )
    _print_decision(cfg)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _print_decision(cfg: Any) -> None:
    """One line: the triage the run will use and what it gave on val."""
    d = cfg.decision
    films = (cfg.val_metrics or {}).get("films") or {}
    err_console.print(
        f"decision: {d.policy} on {d.score} at {d.triage.threshold:.4g}; on val, "
        f"normal films clean {_num(films.get('normal_clean'))}, abnormal films flagged "
        f"{_num(films.get('abnormal_flagged'))}",
        highlight=False,
    )
