"""Stage 4, preprocess: decode every real format, resize once, and cache for fast training.

The raw files are never written to. :func:`prepare` is the one path from a file to model
pixels, used by both the cache (training) and the predictor.
"""

from __future__ import annotations

from cxrad.preprocess.cache import PreprocessSummary, file_sha1, preprocess_work
from cxrad.preprocess.decode import MAX_PIXELS, decode_image
from cxrad.preprocess.store import Cache, cache_dir, open_cache
from cxrad.preprocess.transform import (
    MODES,
    PREPROCESS_VERSION,
    PreprocessConfig,
    PreprocessConfigError,
    prepare,
    resize,
)

__all__ = [
    "MAX_PIXELS",
    "MODES",
    "PREPROCESS_VERSION",
    "Cache",
    "PreprocessConfig",
    "PreprocessConfigError",
    "PreprocessSummary",
    "cache_dir",
    "decode_image",
    "file_sha1",
    "open_cache",
    "prepare",
    "preprocess_work",
    "resize",
]
