"""Typed exceptions for every stage, so the CLI can turn user errors into one-line reasons.

Anything derived from :class:`CxradError` is a *user* error: the CLI prints its message and
exits non-zero without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CxradError(Exception):
    """Base class for errors caused by input or configuration, not by a bug."""


class OutputError(CxradError):
    """An output folder (``--out``) is a file, or cannot be created or written."""


class DiskSpaceError(CxradError):
    """Not enough free space for a write about to start; says how much is needed and where."""


class IngestError(CxradError):
    """A dataset folder is missing, empty, or in a layout no adapter recognises."""


class LabelFileError(IngestError):
    """A label file is malformed: wrong columns, delimiter, encoding or compression, ragged rows.

    The message names the file, the line or column, and what was expected.
    """


class ManifestError(CxradError):
    """A manifest is missing or does not follow the schema."""


class SplitError(CxradError):
    """Split ratios or options are invalid, or the manifest cannot be split."""


class DecodeError(CxradError):
    """An image file cannot be decoded into a chest X-ray array."""


class ImageReadError(DecodeError):
    """One file cannot be read as an image; ``code`` says why, in a stable word.

    Raised by :func:`cxrad.image.read_image` for every failure, so a stage can record the file
    with its reason and go on. Codes: ``missing``, ``empty``, ``not_an_image``, ``truncated``,
    ``too_large``, ``unsupported_transfer_syntax``, ``undecodable``, ``unreadable``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class PreprocessConfigError(CxradError):
    """A preprocessing option (size, resize mode) is invalid."""


class CacheError(CxradError):
    """The preprocessing cache is missing, stale, or inconsistent."""


class ModelError(CxradError):
    """An unknown model name, or a run directory that cannot be loaded."""


class TrainError(CxradError):
    """Training cannot start: no data in a split, bad options."""


class EvaluateError(CxradError):
    """Evaluation cannot run: no labelled rows, mismatched classes."""


class PredictError(CxradError):
    """Prediction cannot run: no inputs, no model."""


class AdaptError(CxradError):
    """A site's films cannot adapt a run: none labelled, no positives, no negatives."""


class GateError(CxradError):
    """The input gate cannot run: its shipped model is missing or broken."""


class SegmentError(CxradError):
    """The lung segmenter cannot be loaded, or a segmentation option is invalid."""
