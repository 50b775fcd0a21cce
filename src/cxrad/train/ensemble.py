"""Stage 7, train: assemble trained runs into one ensemble run, with its decisions fitted on val.

The ensemble run is an ordinary run directory (see :mod:`cxrad.models.ensemble`), so
``cxrad evaluate``, ``cxrad predict`` and ``cxrad export`` take it like any other. Its
temperatures, operating points and triage are fitted by the same
:func:`~cxrad.train.finalise.finalise` as a trained run, on the val split the members were
selected on, never on test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import cxrad
from cxrad.environment import environment
from cxrad.errors import TrainError
from cxrad.folderlock import writes_folder
from cxrad.manifest import manifest_hash, read_manifest
from cxrad.models import DEFAULT_RULE, RunConfig, load_run, parse_rule, resolve_run
from cxrad.models.ensemble import ENSEMBLE, ensemble_of
from cxrad.train.finalise import finalise, val_logits
from cxrad.train.fit import git_commit

logger = logging.getLogger(__name__)

MUST_AGREE = ("classes", "activation", "preprocess", "manifest_hash", "held_out_sources")
"""RunConfig fields every member must share: same outputs, same input, same training data."""


@writes_folder("out", "cxrad ensemble", TrainError)
def ensemble_runs(
    runs: Sequence[str | Path],
    work: str | Path,
    out: str | Path,
    batch_size: int = 64,
    operating_point: str = DEFAULT_RULE,
) -> Path:
    """Average the probabilities of ``runs`` in one model; fit its decisions on WORK's val split.

    Args:
        runs: two or more trained run directories with the same classes, activation,
            preprocessing and training manifest.
        work: the work folder the members were trained on (its manifest hash must match theirs,
            so val is the split they were selected on, not data they trained on).
        out: the ensemble run directory to write.
        batch_size: images per inference batch on val.
        operating_point: ``spec=0.95`` (default), ``sens=0.90`` or ``youden``.

    Raises:
        TrainError: fewer than two runs, members that disagree, or a different work folder.

    Example:
        >>> ensemble_runs(["runs/s0", "runs/s1", "runs/s2"], "work", "runs/ens")
    """
    t0 = time.perf_counter()
    rule = parse_rule(operating_point)
    if len(runs) < 2:
        raise TrainError(f"an ensemble needs at least two runs, got {len(runs)}")
    paths = [resolve_run(r) for r in runs]
    if len({p.resolve() for p in paths}) < len(paths):
        raise TrainError("the same run is listed twice; an ensemble member counts once")
    loaded = [load_run(p) for p in paths]
    cfgs = [cfg for _, cfg in loaded]
    for cfg, path in zip(cfgs, paths, strict=True):
        if cfg.model.name == ENSEMBLE:
            raise TrainError(f"{path} is already an ensemble; list its members instead")
    first = cfgs[0]
    for key in MUST_AGREE:
        for cfg, path in zip(cfgs[1:], paths[1:], strict=True):
            if getattr(cfg, key) != getattr(first, key):
                raise TrainError(
                    f"{path} and {paths[0]} differ in {key!r} ({getattr(cfg, key)!r} vs "
                    f"{getattr(first, key)!r}); ensemble runs trained on the same data and classes"
                )
    work_hash = manifest_hash(read_manifest(work))
    if first.manifest_hash != work_hash:
        raise TrainError(
            f"the members were trained on manifest {first.manifest_hash}, but {work} holds "
            f"{work_hash}; pick thresholds on the work folder they were trained on"
        )
    activation = first.activation
    members = [{"name": c.model.name, "kwargs": c.model.kwargs} for c in cfgs]
    model = ensemble_of([m for m, _ in loaded], activation).eval()
    config = RunConfig.from_dict(
        {
            "model": {"name": ENSEMBLE, "kwargs": {"members": members, "activation": activation}},
            "members": [
                {
                    "run": str(p),
                    "model": c.model.name,
                    "seed": (c.train or {}).get("seed"),
                    "val_macro_auroc": (c.val_metrics or {}).get("macro_auroc"),
                }
                for p, c in zip(paths, cfgs, strict=True)
            ],
            "classes": list(first.classes),
            "input": model.spec.contract(),
            "preprocess": asdict(first.preprocess),
            "activation": activation,
            "manifest_hash": work_hash,
            "held_out_sources": list(first.held_out_sources),  # and its cut-offs never see them
            "git_commit": git_commit(),
            "environment": environment(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cxrad_version": cxrad.__version__,
        }
    )
    logits, labels, sources = val_logits(model, config, work, batch_size)
    config = config.evolve(extra={**config.extra, "data": {"n_val": len(labels)}})
    out = finalise(model, config, logits, labels, out, rule, sources)
    logger.info(
        "wrote %s: %d members (val macro AUROC of members: %s) in %.0fs",
        out,
        len(paths),
        ", ".join(str(m["val_macro_auroc"]) for m in config.extra["members"]),
        time.perf_counter() - t0,
    )
    return out


__all__ = ["ensemble_runs"]
