"""Stage 9, predict: export a run to ONNX, and find (or make) the ONNX file a run predicts with.

The exported graph is the whole :class:`~cxrad.models.Classifier`, input normalisation
included, so ONNX Runtime takes the same ``(B, 1, S, S)`` [0, 1] images as PyTorch. The batch
axis is dynamic. The run's whole :class:`~cxrad.models.RunConfig` (activation, temperatures,
operating points, triage, preprocessing) is embedded in the ONNX ``metadata_props``, so the
``.onnx`` file alone reproduces the run's decisions (:func:`onnx_run_config`). The SHA-256 of
``model.safetensors`` and ``config.json`` is stored too: an ONNX file whose weights *or*
decisions no longer match its run (retrained, or refitted in place by ``cxrad evaluate
--fit-temperature``) is re-exported instead of silently used with the old operating points.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch

from cxrad.errors import PredictError
from cxrad.models import RunConfig, load_run, resolve_run
from cxrad.models.run import CONFIG, WEIGHTS

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
_SHA_KEY = "cxrad_run_sha256"
CONFIG_KEY = "cxrad_run_config"
"""ONNX metadata key holding the run's ``config.json`` (the :class:`RunConfig` JSON)."""


def run_sha256(run_dir: Path) -> str:
    """SHA-256 of a run's ``model.safetensors`` then ``config.json``: what an ONNX file embeds."""
    h = hashlib.sha256()
    for name in (WEIGHTS, CONFIG):
        with open(run_dir / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK)


def export_onnx(run: str | Path = "default", out: str | Path | None = None) -> Path:
    """Write the run's model as ONNX (opset 17, dynamic batch axis) and check it loads.

    Args:
        run: a run folder, or ``"default"`` for the shipped model.
        out: the ``.onnx`` file to write; default ``RUN/model.onnx``.

    Raises:
        PredictError: ``out`` is not given and the run folder is read-only.

    Example:
        >>> export_onnx("runs/fast")  # doctest: +SKIP
        PosixPath('runs/fast/model.onnx')
    """
    import onnx

    run_dir = resolve_run(run)
    if out is None:
        if not _writable(run_dir):
            raise PredictError(
                f"cannot write {run_dir / ONNX_NAME}: the folder is read-only; pass --out PATH"
            )
        out = run_dir / ONNX_NAME
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model, cfg = load_run(run_dir)
    size = cfg.preprocess.size
    dummy = torch.rand(1, 1, size, size)
    tmp = out.with_name(f".{out.name}.tmp")
    with warnings.catch_warnings():
        # torch >= 2.9 warns that the TorchScript exporter is legacy; the dynamo exporter
        # needs onnxscript, which cxrad does not depend on.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    proto = onnx.load(str(tmp))
    onnx.checker.check_model(proto)
    meta = {
        _SHA_KEY: run_sha256(run_dir),
        CONFIG_KEY: cfg.to_json(),
        "cxrad_classes": json.dumps(list(cfg.classes)),
        "cxrad_model": cfg.name,
        "cxrad_input_size": str(size),
    }
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(tmp))
    os.replace(tmp, out)
    logger.info("exported %s to %s", run_dir, out)
    return out


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, as a dict."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def onnx_run_sha(path: Path) -> str | None:
    """The run hash recorded in an exported ONNX file, or None for a foreign or older file."""
    return onnx_metadata(path).get(_SHA_KEY)


def onnx_run_config(path: str | Path) -> RunConfig:
    """The run config embedded in an exported ONNX file.

    Raises:
        PredictError: the file was not exported by this cxrad (no embedded config).
    """
    text = onnx_metadata(path).get(CONFIG_KEY)
    if text is None:
        raise PredictError(
            f"{path} has no cxrad run config in its metadata (exported by an older cxrad, or "
            "not by cxrad); export it again with `cxrad export RUN`"
        )
    return RunConfig.from_dict(json.loads(text))


def cache_dir() -> Path:
    """Where ONNX files for read-only runs go: ``$CXRAD_CACHE`` or ``~/.cache/cxrad``."""
    root = os.environ.get("CXRAD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cxrad"
    )
    return Path(root) / "onnx"


def ensure_onnx(run: str | Path = "default") -> Path:
    """The ONNX file to predict with for ``run``, exporting it first if needed.

    Uses ``RUN/model.onnx`` when it was exported from the run's current weights and config.
    Otherwise exports there, or, when the run folder is read-only (an installed default model),
    into :func:`cache_dir`, named by the run's hash.
    """
    run_dir = resolve_run(run)
    sha = run_sha256(run_dir)
    candidates = [run_dir / ONNX_NAME, cache_dir() / f"{sha}.onnx"]
    for c in candidates:
        if c.is_file() and onnx_run_sha(c) == sha:
            return c
    target = candidates[0] if _writable(run_dir) else candidates[1]
    if target.is_file():
        logger.info("%s was exported from other weights or decisions; exporting again", target)
    try:
        return export_onnx(run_dir, target)
    except OSError as e:
        fallback = Path(tempfile.gettempdir()) / "cxrad-onnx" / f"{sha}.onnx"
        logger.warning("cannot write %s (%s); exporting to %s", target, e, fallback)
        return export_onnx(run_dir, fallback)
