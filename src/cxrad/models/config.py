"""Stage 6, models: :class:`RunConfig`, the typed contract of a run and the only reader/writer of ``config.json``.

After timm's ``PretrainedCfg``: one frozen, versioned object says how to rebuild the model
(registry name, builder arguments, input contract), how its images were prepared, and how
its outputs become decisions (activation, per-class temperature, per-class operating points,
the triage operating point and the decision policy). Every config that cxrad has written
loads: :meth:`RunConfig.from_dict` upgrades older layouts (no ``version`` = version 1, a
scalar ``temperature``, ``thresholds`` instead of ``operating_points``, no triage).

Example:
    >>> cfg = RunConfig.load("src/cxrad/assets/default")  # doctest: +SKIP
    >>> cfg.operating_points["NORMAL"].threshold  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrad.atomic import write_bytes
from cxrad.errors import ModelError
from cxrad.labels import NORMAL

if TYPE_CHECKING:
    from cxrad.preprocess import PreprocessConfig

CONFIG = "config.json"
CONFIG_VERSION = 2
"""1: the untyped dict of cxrad <= 0.1 (scalar temperature, ``thresholds``); 2: this layout."""

TASKS = ("multilabel", "one-class")
TRIAGE_SCORES = ("not_normal", "max_finding", "finding_margin")
POLICIES = ("triage_gate", "independent")
UNFITTED = 0.5
"""The cut-off of a class that validation could not score (no positive or no negative)."""


@dataclass(frozen=True)
class ModelRef:
    """Registry name and builder arguments (``{"name": ..., "kwargs": {...}}`` in the file)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputContract:
    """What the network takes: side, channels, the normalisation inside the model, Grad-CAM layer."""

    input_size: int
    in_channels: int = 1
    mean: float = 0.5
    std: float = 0.25
    cam_layer: str = ""
    name: str = ""
    description: str = ""


@dataclass(frozen=True)
class Preprocess:
    """How images were prepared for the model (the cache key of ``cxrad preprocess``)."""

    size: int
    mode: str = "letterbox"
    crop: str = "none"
    normalise: str = "none"
    """``"none"`` | ``"clahe"`` | ``"histeq"``: ``cxrad preprocess --normalise`` (absent = none)."""

    def cache_config(self) -> PreprocessConfig:
        """The :class:`~cxrad.preprocess.PreprocessConfig` of this run's cache and live pixels.

        Raises:
            PreprocessConfigError: a value this cxrad does not know (a newer run).
        """
        from cxrad.preprocess import PreprocessConfig

        return PreprocessConfig(self.size, self.mode, self.crop, self.normalise)  # type: ignore[arg-type]


@dataclass(frozen=True)
class OperatingPoint:
    """One cut-off on a calibrated probability (or score), how it was chosen, what it gave on val.

    Attributes:
        threshold: positive when the score is ``>=`` this.
        method: ``"spec"``, ``"sens"``, ``"youden"``, ``"fixed"``, or an older run's method name.
        target: the aimed-for specificity / sensitivity (None for Youden or fixed).
        val_sensitivity: sensitivity on the val rows that annotate the class (None if unknown).
        val_specificity: specificity on the same rows.
        n_pos: annotated val positives behind it.
        n_neg: annotated val negatives behind it.
    """

    threshold: float
    method: str = "fixed"
    target: float | None = None
    val_sensitivity: float | None = None
    val_specificity: float | None = None
    n_pos: int | None = None
    n_neg: int | None = None


@dataclass(frozen=True)
class Decision:
    """How a film becomes normal or abnormal, and why this way.

    Attributes:
        policy: ``"triage_gate"`` (a film triage calls normal lists no finding) or
            ``"independent"`` (findings and the normal flag are decided separately; old runs).
        score: the triage score: ``"not_normal"`` = 1 - p(NORMAL), ``"max_finding"`` = the
            largest finding probability, ``"finding_margin"`` = the largest logit margin of a
            finding over its own threshold (triage at 0 = "any finding flagged").
        triage: the operating point on that score (higher = more abnormal).
        chosen_by: how policy and score were picked.
        alternatives: the val measurements of every alternative considered.
    """

    policy: str
    score: str
    triage: OperatingPoint
    chosen_by: str = ""
    alternatives: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a run's model and turn its logits into decisions."""

    model: ModelRef
    classes: tuple[str, ...]
    input: InputContract
    preprocess: Preprocess
    activation: str = "sigmoid"
    temperature: tuple[float, ...] | None = None
    operating_points: dict[str, OperatingPoint] = field(default_factory=dict)
    decision: Decision | None = None
    task: str = "multilabel"
    ood: dict[str, Any] | None = None
    held_out_sources: tuple[str, ...] = ()
    manifest_hash: str | None = None
    git_commit: str | None = None
    train: dict[str, Any] | None = None
    val_metrics: dict[str, Any] | None = None
    created: str | None = None
    version: int = CONFIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    """Other recorded facts (``members``, ``data``, ``best_epoch``, ``hardware`` ...), kept as is."""

    def __post_init__(self) -> None:
        if self.activation not in ("sigmoid", "softmax"):
            raise ModelError(f"unknown activation {self.activation!r}; use sigmoid or softmax")
        if self.task not in TASKS:
            raise ModelError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.temperature is not None and len(self.temperature) != len(self.classes):
            raise ModelError(
                f"{len(self.temperature)} temperatures for {len(self.classes)} classes"
            )
        if self.decision is None:
            object.__setattr__(self, "decision", legacy_decision(self))

    # -- derived views -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.model.name

    def threshold(self, cls: str) -> float:
        """The cut-off of ``cls`` (:data:`UNFITTED` when the run has none)."""
        op = self.operating_points.get(cls)
        return float(op.threshold) if op is not None else UNFITTED

    def thresholds(self) -> dict[str, float]:
        return {c: self.threshold(c) for c in self.classes}

    def temperatures(self) -> tuple[float, ...]:
        return self.temperature or (1.0,) * len(self.classes)

    def provenance(self) -> dict[str, Any]:
        """Which data, split, code and decision rule this run came from.

        Every prediction record carries it, so a result read on its own still names the model
        behind it: the manifest fingerprint covers the images, labels and split.
        """
        return {
            "name": self.name,
            "manifest_hash": self.manifest_hash,
            "held_out_sources": list(self.held_out_sources),
            "created": self.created,
            "git_commit": self.git_commit,
            "cxrad_version": self.extra.get("cxrad_version"),
            "operating_point_rule": self.extra.get("operating_point_rule"),
            "decision": self.decision.policy if self.decision is not None else None,
        }

    def evolve(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` (the config is frozen)."""
        return replace(self, **changes)

    # -- file format -----------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        """Parse any ``config.json`` cxrad has written (see the module docstring).

        Raises:
            ModelError: a config from a newer cxrad, or one without ``model``/``classes``.
        """
        d = dict(d)
        version = int(d.pop("version", 1))
        if version > CONFIG_VERSION:
            raise ModelError(
                f"this run's config is version {version}, newer than this cxrad reads "
                f"({CONFIG_VERSION}); upgrade cxrad"
            )
        for key in ("model", "classes"):
            if key not in d:
                raise ModelError(f"run config has no {key!r}; is it a cxrad run?")
        m = d.pop("model")
        model = ModelRef(str(m["name"]), dict(m.get("kwargs") or {}))
        classes = tuple(str(c) for c in d.pop("classes"))
        inp = d.pop("input", None) or _registry_contract(model.name)
        contract = InputContract(**{k: v for k, v in inp.items() if k in _names(InputContract)})
        pre = d.pop("preprocess", None) or {}
        preprocess = Preprocess(
            size=int(pre.get("size") or contract.input_size),
            mode=str(pre.get("mode") or "letterbox"),
            crop=str(pre.get("crop") or "none"),
            normalise=str(pre.get("normalise") or "none"),
        )
        temp = d.pop("temperature", None)
        if temp is not None and not isinstance(temp, (list, tuple)):
            temp = [float(temp)] * len(classes)
        method = str(d.pop("threshold_method", "fixed"))
        legacy = d.pop("thresholds", None) or {}
        raw_ops = d.pop("operating_points", None)
        if raw_ops is not None:
            ops = {c: OperatingPoint(**v) for c, v in raw_ops.items()}
        else:
            ops = {c: OperatingPoint(float(t), method) for c, t in legacy.items()}
        dec = d.pop("decision", None)
        decision = None
        if dec is not None:
            decision = Decision(**{**dec, "triage": OperatingPoint(**dec["triage"])})
        known = {
            k: d.pop(k)
            for k in ("task", "ood", "manifest_hash", "git_commit", "train", "val_metrics")
            if k in d
        }
        return cls(
            model=model,
            classes=classes,
            input=contract,
            preprocess=preprocess,
            activation=str(d.pop("activation", None) or "sigmoid"),
            temperature=None if temp is None else tuple(float(t) for t in temp),
            operating_points=ops,
            decision=decision,
            held_out_sources=tuple(d.pop("held_out_sources", None) or ()),
            created=d.pop("created", None),
            version=CONFIG_VERSION,
            extra=d,
            **known,
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` content: JSON-safe (no NaN/Infinity), current version."""
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = asdict(value) if hasattr(value, "__dataclass_fields__") else value
        out["classes"] = list(self.classes)
        if out["preprocess"].get("normalise") == "none":  # configs from before the option
            del out["preprocess"]["normalise"]
        out["held_out_sources"] = list(self.held_out_sources)
        out["temperature"] = None if self.temperature is None else list(self.temperature)
        out["operating_points"] = {c: asdict(op) for c, op in self.operating_points.items()}
        return json_safe(out)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunConfig:
        """Read ``run_dir/config.json``.

        Raises:
            ModelError: no config there, or one that is not valid JSON.
        """
        path = Path(run_dir) / CONFIG
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError as e:
            raise ModelError(f"{path} does not exist; is {run_dir} a cxrad run?") from e
        except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
            raise ModelError(f"{path} is not a valid cxrad run config: {e}") from e

    def save(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/config.json`` atomically; returns its path."""
        path = Path(run_dir) / CONFIG
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_bytes(path, self.to_json().encode())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False, default=str)

    # -- compatibility: code written for the old dict config --------------------------

    def legacy(self) -> dict[str, Any]:
        """The old dict view (``thresholds``, a scalar ``temperature`` when all are equal)."""
        d = self.to_dict()
        d["thresholds"] = self.thresholds()
        temps = set(self.temperatures())
        d["temperature"] = temps.pop() if self.temperature and len(temps) == 1 else self.temperature
        return d

    def __getitem__(self, key: str) -> Any:
        return self.legacy()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.legacy().get(key, default)


def legacy_decision(cfg: RunConfig) -> Decision:
    """The decision an old run (no ``decision``) made: findings independent of triage.

    Triage is 1 - p(NORMAL) called abnormal when p(NORMAL) falls below NORMAL's own threshold,
    or, without a NORMAL output, the largest finding probability at 0.5.
    """
    if NORMAL in cfg.classes:
        t = 1.0 - cfg.threshold(NORMAL)
        return Decision("independent", "not_normal", OperatingPoint(t, "from NORMAL threshold"))
    return Decision("independent", "max_finding", OperatingPoint(UNFITTED, "fixed"))


def json_safe(x: Any) -> Any:
    """``x`` with NaN and +-Infinity replaced by None, tuples as lists (for strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        return json_safe(x.item())  # numpy scalars
    return x


def _names(klass: type) -> set[str]:
    return {f.name for f in fields(klass)}


def _registry_contract(name: str) -> dict[str, Any]:
    # The oldest configs did not record the input contract: the registry's is what they used.
    from cxrad.models.registry import get_spec

    return get_spec(name).contract()
