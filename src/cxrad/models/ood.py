"""Stage 6, models: an out-of-distribution score on a model's penultimate features.

A classifier answers for every input, also for films unlike anything it was trained on (another
hospital's scanner, a child when it saw adults). Lee et al. (NeurIPS 2018) showed that the
Mahalanobis distance of an input's penultimate features to the training features flags such
inputs well; with a few thousand films and 256-512 features the sample covariance is
ill-conditioned, so it is shrunk with Ledoit-Wolf (scikit-learn ``LedoitWolf``).

:class:`GaussianOOD` follows scikit-learn's conventions (fitted state ends in ``_``, ``fit``
returns ``self``). Its state is stored beside the weights as ``ood.safetensors``; the run's
config gets an ``ood`` entry (method, file, threshold, quantile, feature dim, counts).
The threshold is a quantile of the scores of the *validation* films, so by construction about
``1 - quantile`` of in-distribution films are flagged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cxrad.errors import ModelError

logger = logging.getLogger(__name__)

OOD_FILE = "ood.safetensors"
METHOD = "mahalanobis_ledoit_wolf"
DEFAULT_QUANTILE = 0.99


class GaussianOOD:
    """Mahalanobis distance to one Gaussian fitted (with Ledoit-Wolf shrinkage) on features.

    Example:
        >>> ood = GaussianOOD().fit(train_features).set_threshold(val_features)  # doctest: +SKIP
        >>> ood.score(test_features) > ood.threshold_  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.precision_: np.ndarray | None = None
        self.threshold_: float | None = None
        self.quantile_: float | None = None
        self.n_fit_: int = 0
        self.n_threshold_: int = 0

    def fit(self, features: np.ndarray) -> GaussianOOD:
        """Fit the mean and the shrunk precision matrix on ``(N, F)`` in-distribution features."""
        from sklearn.covariance import LedoitWolf

        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or len(f) < 2:
            raise ModelError(f"OOD statistics need at least 2 feature rows (N, F), got {f.shape}")
        lw = LedoitWolf(assume_centered=False).fit(f)
        self.mean_ = lw.location_.astype(np.float64)
        self.precision_ = lw.precision_.astype(np.float64)
        self.n_fit_ = len(f)
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance ``(N,)``: higher = less like the training films."""
        self._check_fitted()
        d = np.asarray(features, dtype=np.float64) - self.mean_
        q = np.einsum("nf,fg,ng->n", d, self.precision_, d)
        return np.sqrt(np.maximum(q, 0.0))

    def set_threshold(
        self, features: np.ndarray, quantile: float = DEFAULT_QUANTILE
    ) -> GaussianOOD:
        """Threshold = the ``quantile`` of in-distribution (validation) films' scores."""
        if not 0.0 < quantile < 1.0:
            raise ModelError(f"the OOD quantile must be in (0, 1), got {quantile}")
        s = self.score(features)
        if not len(s):
            raise ModelError("no validation features to set the OOD threshold on")
        self.threshold_ = float(np.quantile(s, quantile))
        self.quantile_ = float(quantile)
        self.n_threshold_ = len(s)
        return self

    def torch_score(self, features: torch.Tensor) -> torch.Tensor:
        """The same distance as :meth:`score`, differentiable, for a batch of torch features."""
        self._check_fitted()
        mean = torch.as_tensor(self.mean_, dtype=features.dtype, device=features.device)
        prec = torch.as_tensor(self.precision_, dtype=features.dtype, device=features.device)
        d = features - mean
        return torch.sqrt(torch.clamp(((d @ prec) * d).sum(dim=1), min=0.0))

    def records(self, scores: np.ndarray) -> list[dict[str, Any]]:
        """One ``{"score", "threshold", "unlike_training"}`` per score (JSON-safe)."""
        out = []
        for s in np.asarray(scores, dtype=np.float64):
            score = float(s) if np.isfinite(s) else float(np.finfo(np.float64).max)
            flag = self.threshold_ is not None and score > self.threshold_
            out.append({"score": score, "threshold": self.threshold_, "unlike_training": flag})
        return out

    # -- storage ---------------------------------------------------------------------------

    def save(self, run_dir: str | Path) -> dict[str, Any]:
        """Write ``ood.safetensors`` into ``run_dir``; return the config entry that refers to it."""
        self._check_fitted()
        run_dir = Path(run_dir)
        tmp = run_dir / f".{OOD_FILE}.tmp"
        save_file(
            {
                "mean": torch.from_numpy(self.mean_.copy()),
                "precision": torch.from_numpy(self.precision_.copy()),
            },
            str(tmp),
        )
        os.replace(tmp, run_dir / OOD_FILE)
        return {
            "method": METHOD,
            "file": OOD_FILE,
            "threshold": self.threshold_,
            "quantile": self.quantile_,
            "feature_dim": int(self.mean_.shape[0]),
            "n_fit": self.n_fit_,
            "n_threshold": self.n_threshold_,
        }

    @classmethod
    def load(cls, run_dir: str | Path, entry: dict[str, Any]) -> GaussianOOD:
        """Rebuild from a run's ``ood`` config entry and its file.

        Raises:
            ModelError: an unknown method or a missing file.
        """
        if entry.get("method") != METHOD:
            raise ModelError(
                f"unknown OOD method {entry.get('method')!r} in the run config; this cxrad "
                f"knows {METHOD!r}; refit with `cxrad fit-ood RUN --data WORK`"
            )
        path = Path(run_dir) / str(entry.get("file") or OOD_FILE)
        if not path.is_file():
            raise ModelError(
                f"the run config names OOD statistics {path} but the file is missing; "
                "refit with `cxrad fit-ood RUN --data WORK`"
            )
        try:
            state = load_file(str(path))
            mean, precision = state["mean"], state["precision"]
        except (SafetensorError, KeyError, OSError) as e:  # cut short or overwritten
            raise ModelError(
                f"{path} is not readable OOD statistics ({type(e).__name__}: {e}); refit with "
                "`cxrad fit-ood RUN --data WORK`"
            ) from e
        ood = cls()
        ood.mean_ = mean.numpy().astype(np.float64)
        ood.precision_ = precision.numpy().astype(np.float64)
        ood.threshold_ = None if entry.get("threshold") is None else float(entry["threshold"])
        ood.quantile_ = entry.get("quantile")
        ood.n_fit_ = int(entry.get("n_fit") or 0)
        ood.n_threshold_ = int(entry.get("n_threshold") or 0)
        return ood

    def _check_fitted(self) -> None:
        if self.mean_ is None or self.precision_ is None:
            raise ModelError("GaussianOOD is not fitted; call fit(features) first")


def load_ood(run_dir: str | Path, config: Any) -> GaussianOOD | None:
    """The run's OOD statistics, or None when it has none (older runs, the shipped default).

    ``config`` is the run's :class:`~cxrad.models.RunConfig` (or its dict form).
    """
    entry = config.get("ood") if isinstance(config, dict) else config.ood
    return GaussianOOD.load(run_dir, entry) if entry else None


@torch.no_grad()
def ood_records(
    ood: GaussianOOD | None, model: torch.nn.Module, x: np.ndarray, device: torch.device
) -> list[dict[str, Any]] | None:
    """The ``ood`` field of each prediction record for a batch ``x`` (``(B, 1, S, S)`` in [0, 1]).

    The features come from the torch model whatever the inference backend, so an ONNX run
    scores exactly as an eager one. None when the run has no OOD statistics.
    """
    if ood is None:
        return None
    feats = model.forward_features(torch.from_numpy(x).to(device)).double().cpu().numpy()
    return ood.records(ood.score(feats))


def attach_ood(run_dir: str | Path, ood: GaussianOOD) -> dict[str, Any]:
    """Save ``ood`` into the run and record its entry in ``config.json`` (atomic rewrite).

    Only the ``ood`` field of the run's :class:`~cxrad.models.RunConfig` changes.
    """
    from cxrad.models.config import RunConfig

    run_dir = Path(run_dir)
    entry = ood.save(run_dir)
    RunConfig.load(run_dir).evolve(ood=entry).save(run_dir)
    logger.info(
        "OOD statistics (%s, %d features) fitted on %d films, threshold %.3f at the %.3g "
        "quantile of %d val films -> %s",
        METHOD,
        entry["feature_dim"],
        entry["n_fit"],
        entry["threshold"] if entry["threshold"] is not None else float("nan"),
        entry["quantile"] or float("nan"),
        entry["n_threshold"],
        run_dir / OOD_FILE,
    )
    return entry


__all__ = ["DEFAULT_QUANTILE", "OOD_FILE", "GaussianOOD", "attach_ood", "load_ood", "ood_records"]
