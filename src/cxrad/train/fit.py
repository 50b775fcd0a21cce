"""Stage 7, train: ``train(work, model, out)``: from a preprocessed work folder to a run directory.

Three steps: :func:`prepare` (options, classes, loaders, the network), :func:`fit` (Lightning
runs the loop: devices, DDP, mixed precision, checkpoints, early stopping, resume, CSV logs;
the best epoch's weights come back) and :func:`cxrad.train.finalise.finalise` (temperatures,
operating points and triage fitted on val, then a plain run: safetensors + JSON), which the
ensemble builder shares.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, RichProgressBar
from lightning.pytorch.loggers import CSVLogger

import cxrad
from cxrad.data import AugmentConfig, make_dataloaders, trainable_classes
from cxrad.data.holdout import drop_held_out, parse_sources
from cxrad.environment import environment
from cxrad.errors import TrainError
from cxrad.folderlock import folder_lock
from cxrad.manifest import manifest_hash, read_manifest
from cxrad.models import (
    DEFAULT_RULE,
    Classifier,
    RunConfig,
    check_input_size,
    create_model,
    get_spec,
    parse_rule,
)
from cxrad.preprocess import PreprocessConfig
from cxrad.train.checkpoints import (
    MONITOR,
    AtomicCheckpointIO,
    MovableCheckpoint,
    best_checkpoint,
    clear_previous,
    drop_partial_checkpoints,
    keep_log_history,
)
from cxrad.train.domain import DOMAIN_COLUMN, build_adversary, check_dg
from cxrad.train.finalise import finalise, predict_logits, predict_probs
from cxrad.train.inputs import check_loaded, check_options, streamed_loaders, training_rows
from cxrad.train.losses import pos_weight_from_labels
from cxrad.train.module import CxrModule
from cxrad.train.ood import fit_ood_if_cached, fit_run_ood
from cxrad.train.setup import (
    Hardware,
    git_commit,
    hardware,
    jsonable_devices,
    open_work_cache,
    parse_devices,
)

logger = logging.getLogger(__name__)


def train(
    work: str | Path,
    model: str = "cxr-fast",
    out: str | Path = "runs/cxr-fast",
    *,
    max_epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    loss: str = "bce",
    size: int = 256,
    mode: str = "letterbox",
    patience: int = 8,
    seed: int = 0,
    devices: int | str | Sequence[int] = "auto",
    num_nodes: int = 1,
    accelerator: str = "auto",
    precision: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    limit_train: int | None = None,
    resume: bool = True,
    progress: bool = True,
    augment: AugmentConfig | None = None,
    model_kwargs: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
    operating_point: str = DEFAULT_RULE,
    data_format: str = "cache",
    stream_base: str | None = None,
    strategy: str | None = None,
    hold_out: Sequence[str] = (),
    sampler: str = "shuffle",
    normalise: str = "none",
    crop: str = "none",
    dg: str = "none",
    dg_weight: float = 0.1,
) -> Path:
    """Train ``model`` on ``WORK``'s train split, select on val macro AUROC, write the run ``out``.

    Args:
        work: a work folder with a split manifest and a cache from ``cxrad preprocess``.
        model: registry name (see ``cxrad info`` / :func:`cxrad.models.list_models`).
        out: the run directory; checkpoints go in ``out/checkpoints``, logs in ``out/logs``.
        max_epochs: upper bound on epochs (early stopping may end sooner).
        batch_size: images per batch per device.
        lr: peak learning rate (one-cycle schedule).
        weight_decay: AdamW weight decay.
        loss: ``"bce"`` (multi-label, NaN-masked, pos_weight) or ``"softmax"`` (original project).
        size: cache image side in pixels.
        mode: cache resize mode (``"letterbox"`` or ``"stretch"``).
        patience: epochs without val AUROC improvement before stopping (0 = never stop early).
        seed: seeds weights, shuffling, augmentation and the ``limit_train`` subset.
        devices: passed to the Lightning Trainer (``"auto"``, a count, or device ids).
        num_nodes: passed to the Trainer; with several devices or nodes training uses DDP.
        accelerator: passed to the Trainer (``"auto"``, ``"cpu"``, ``"gpu"``...).
        precision: passed to the Trainer; None picks bf16/16-mixed on GPUs and 32 on CPUs.
        workers: data-loader processes; None picks 0 on CPUs and up to 4 with a GPU.
        threads: torch CPU threads; None uses every CPU available to the process on a CPU run.
        limit_train: cap on train images (a seeded random subset) for quick runs.
        resume: continue from ``out/checkpoints/last.ckpt`` when it exists.
        progress: show Lightning's Rich progress bar (on stderr).
        augment: augmentation ranges; None uses :class:`~cxrad.data.AugmentConfig` defaults.
        model_kwargs: extra keyword arguments for the model builder.
        callbacks: extra Lightning callbacks (not recorded in the config).
        operating_point: how each class's cut-off is chosen on val: ``spec=0.95`` (default),
            ``sens=0.90`` or ``youden`` (see :mod:`cxrad.models.calibrate`).
        data_format: ``"cache"`` (memmap, random access) or ``"webdataset"`` (tar shards from
            ``cxrad preprocess --format webdataset``; train streamed, disjoint per DDP rank).
        stream_base: where the shards are (a folder or URL prefix); default the work folder's.
        strategy: Lightning strategy (e.g. ``"ddp"``); default DDP for several devices/nodes.
        hold_out: sources left out of train and val (and films linked to them), to measure
            the model on a site it never saw; recorded as ``held_out_sources``.
        sampler: ``"shuffle"`` or ``"balanced"`` (over class x source, :mod:`cxrad.data.sampling`).
        normalise: the cache's intensity normalisation (``cxrad preprocess --normalise``);
            recorded under ``preprocess`` so prediction applies it too.
        crop: the cache's crop, ``"none"`` or ``"lungs"`` (``cxrad preprocess --crop lungs``);
            recorded under ``preprocess``, so predict, evaluate, serve and ONNX crop the same way.
        dg: ``"none"`` or ``"adversarial"``: a training-only source head behind gradient
            reversal (DANN, :mod:`cxrad.train.domain`); the saved model is a plain one.
        dg_weight: the reversal factor at the end of DANN's ramp.

    Returns:
        ``out``, now holding ``model.safetensors`` and ``config.json``.

    Raises:
        TrainError: no train or val rows, no cache, bad options.

    Example:
        >>> run = train("work", model="cxr-fast", out="runs/fast", max_epochs=5)
    """
    t0 = time.perf_counter()
    hold_out = parse_sources(hold_out)
    check_input_size(model, size)  # before any data is read
    args = {k: v for k, v in locals().items() if k not in ("callbacks", "t0")}
    args.update(work=str(work), out=str(out), devices=jsonable_devices(devices))
    rule = parse_rule(operating_point)  # a bad rule fails now, not after training
    check_dg(dg, dg_weight)
    augment = augment if augment is not None else AugmentConfig()
    args["augment"] = augment.to_dict()
    hw = hardware(accelerator, devices, num_nodes, precision, workers, threads)
    prep = prepare(
        work, model, loss=loss, size=size, mode=mode, seed=seed, batch_size=batch_size,
        hw=hw if strategy is None else replace(hw, strategy=strategy),
        limit_train=limit_train, model_kwargs=model_kwargs,
        data_format=data_format, stream_base=stream_base,
        hold_out=hold_out, sampler=sampler, normalise=normalise, crop=crop, dg=dg,
    )  # fmt: skip
    pos_weight = pos_weight_from_labels(prep.train_ds.labels) if loss == "bce" else None
    adv = build_adversary(prep.net, prep.loaders.train, dg_weight, size) if dg != "none" else None
    lit = CxrModule(prep.net, prep.classes, loss, pos_weight, lr, weight_decay, augment, seed, adv)
    out = Path(out)
    with folder_lock(
        out, "cxrad train", TrainError
    ):  # one writer per run folder: two trains would mix their files
        trainer = fit(
            lit, prep, out, max_epochs=max_epochs, patience=patience, resume=resume,
            progress=progress, callbacks=callbacks, devices=devices, num_nodes=num_nodes,
            accelerator=accelerator,
        )  # fmt: skip
        if trainer.global_rank != 0:
            return out
        best_epoch = trainer.cxrad_best_epoch  # type: ignore[attr-defined]
        config = RunConfig.from_dict(
            {
                # Initial weights are baked into the saved state_dict; keeping their path would
                # make the run unloadable once that file is gone.
                "model": {
                    "name": model,
                    "kwargs": {k: v for k, v in (model_kwargs or {}).items() if k != "weights"},
                },
                "classes": prep.classes,
                "input": lit.model.spec.contract(),
                "preprocess": {"size": size, "mode": mode, "crop": crop, "normalise": normalise},
                "activation": lit.activation,
                "held_out_sources": list(hold_out),
                "manifest_hash": manifest_hash(read_manifest(work)),
                "git_commit": git_commit(),
                "train": args,
                "best_epoch": best_epoch,
                "epochs_run": int(trainer.current_epoch),
                "data": {
                    "n_train": len(prep.train_ds),
                    "n_val": len(prep.val_ds),
                    "pos_weight": None
                    if pos_weight is None
                    else dict(zip(prep.classes, pos_weight.tolist(), strict=True)),
                },
                "hardware": {
                    "accelerator": prep.hw.name,
                    "precision": prep.hw.precision,
                    "strategy": prep.hw.strategy,
                },
                "environment": environment(),
                "train_seconds": round(time.perf_counter() - t0, 1),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "cxrad_version": cxrad.__version__,
            }
        )
        logits = predict_logits(lit.model, prep.loaders.val, prep.hw.gpu)
        sources = prep.val_ds.df["source"].to_numpy()
        finalise(lit.model, config, logits, prep.val_ds.labels, out, rule, sources)
        if data_format == "webdataset":  # the shards may be all there is on this node
            fit_ood_if_cached(out, work)
        else:
            fit_run_ood(out, work)  # OOD statistics on the train films' features, threshold on val
        logger.info("wrote %s (best epoch %d, operating points %s)", out, best_epoch, rule)
    return out


@dataclass
class Prepared:
    """What :func:`prepare` resolved: rows, classes, hardware, loaders and the fresh network."""

    df: pd.DataFrame
    classes: list[str]
    hw: Hardware
    loaders: Any
    train_ds: Any
    val_ds: Any
    net: Classifier


def prepare(
    work: str | Path,
    model: str,
    *,
    loss: str,
    size: int,
    mode: str,
    seed: int,
    batch_size: int,
    hw: Hardware,
    limit_train: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    data_format: str = "cache",
    stream_base: str | None = None,
    hold_out: Sequence[str] = (),
    sampler: str = "shuffle",
    normalise: str = "none",
    crop: str = "none",
    dg: str = "none",
) -> Prepared:
    """Check the options and the work folder, pick the classes, build loaders and the network.

    ``hold_out`` sources (and films linked to them) are dropped before anything else, so
    neither train nor val sees them; ``sampler``, ``normalise``, ``crop`` and ``dg`` are as in :func:`train`.

    Raises:
        TrainError: bad options, no train/val rows, nothing cached.
    """
    check_options(data_format, loss, sampler, normalise, crop, dg, hold_out, limit_train)
    get_spec(model)  # an unknown name fails now, with "did you mean", not after loading data
    pre = PreprocessConfig(size=size, mode=mode, crop=crop, normalise=normalise)  # type: ignore[arg-type]  # so do bad values
    df = drop_held_out(training_rows(work), hold_out)
    classes = trainable_classes(df[df["split"] == "train"])
    if not classes:
        raise TrainError(
            f"no class has both positive and negative images in the train split of {work}; "
            "ingest datasets that label at least one class both ways"
        )
    pl.seed_everything(seed, workers=True, verbose=False)
    if data_format == "webdataset":
        loaders = streamed_loaders(work, size, mode, stream_base, df, classes, batch_size, seed, hw)
    else:
        cache = open_work_cache(work, size, mode, normalise, crop)
        loaders = make_dataloaders(
            df, cache, classes, batch_size=batch_size, workers=hw.workers, seed=seed,
            limit_train=limit_train, single_label=loss == "softmax", pin_memory=hw.gpu, uint8=True,
            sampler=sampler, domain=DOMAIN_COLUMN if dg != "none" else None,
        )  # fmt: skip
    train_ds, val_ds = loaders.train.dataset, loaders.val.dataset
    check_loaded(train_ds, val_ds, classes, work, pre)
    logger.info(
        "training %s on %d images (%d val), %d classes: %s",
        model, len(train_ds), len(val_ds), len(classes), ", ".join(classes),
    )  # fmt: skip
    net = create_model(model, num_classes=len(classes), **(model_kwargs or {}))
    return Prepared(df, classes, hw, loaders, train_ds, val_ds, net)


def fit(
    lit: CxrModule,
    prep: Prepared,
    out: Path,
    *,
    max_epochs: int,
    patience: int,
    resume: bool,
    progress: bool,
    callbacks: Sequence[Callback],
    devices: int | str | Sequence[int],
    num_nodes: int,
    accelerator: str,
) -> pl.Trainer:
    """Run Lightning; on rank 0 leave the best checkpoint's weights in ``lit.model``.

    The trainer gets ``cxrad_best_epoch`` (the epoch of those weights).
    """
    hw = prep.hw
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if not resume:
        clear_previous(out)
    drop_partial_checkpoints(ckpt_dir)
    ckpt_cb = MovableCheckpoint(
        dirpath=ckpt_dir, filename="best-epoch{epoch:03d}", auto_insert_metric_name=False,
        monitor=MONITOR, mode="max", save_top_k=1,
    )  # fmt: skip
    # Lightning's save_last only writes when the best improved; resume needs every epoch's end.
    last_cb = MovableCheckpoint(
        dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
        enable_version_counter=False,
    )  # fmt: skip
    cbs: list[Callback] = [ckpt_cb, last_cb, *callbacks]  # best first: last.ckpt holds its state
    if patience > 0:
        cbs.append(EarlyStopping(monitor=MONITOR, mode="max", patience=patience))
    if progress:
        cbs.append(RichProgressBar(console_kwargs={"stderr": True}))
    trainer = pl.Trainer(
        max_epochs=max_epochs, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
        strategy=hw.strategy, precision=hw.precision, deterministic=not hw.gpu,
        callbacks=cbs, logger=CSVLogger(save_dir=out, name="logs", version="", flush_logs_every_n_steps=10),
        enable_progress_bar=progress, enable_model_summary=progress,
        num_sanity_val_steps=0, log_every_n_steps=min(50, max(len(prep.loaders.train), 1)),
        default_root_dir=out, plugins=[AtomicCheckpointIO()],
    )  # fmt: skip
    ckpt_path = last if resume and last.is_file() else None
    if ckpt_path:
        logger.info("resuming from %s", ckpt_path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*treespec.*")
        try:
            with keep_log_history(out / "logs" / "metrics.csv", enabled=ckpt_path is not None):
                trainer.fit(lit, prep.loaders.train, prep.loaders.val, ckpt_path=ckpt_path)
        except RuntimeError as e:
            if ckpt_path and "state_dict" in str(e):
                raise TrainError(
                    f"{ckpt_path} does not fit this model/classes ({e}); "
                    "use --no-resume or another --out"
                ) from e
            raise
    if trainer.global_rank != 0:
        return trainer
    best = best_checkpoint(ckpt_cb, ckpt_dir, out / "logs" / "metrics.csv", last)
    state = torch.load(best, map_location="cpu", weights_only=True)
    trainer.cxrad_best_epoch = int(state.get("epoch", -1))  # type: ignore[attr-defined]
    lit.model.load_state_dict(
        {
            k.removeprefix("model."): v
            for k, v in state["state_dict"].items()
            if k.startswith("model.")
        }
    )
    return trainer


__all__ = ["git_commit", "parse_devices", "predict_probs", "train"]
