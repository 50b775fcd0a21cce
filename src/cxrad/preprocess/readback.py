"""Stage 4, preprocess: read back the cache's small files, a damaged one as a CacheError.

A copy cut short or a file overwritten by hand must say which file and what to run, not raise
a pyarrow or JSON traceback in whichever stage opens the cache first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxrad.errors import CacheError


def read_table(path: Path, hint: str) -> pd.DataFrame:
    """``pd.read_parquet(path)``; a damaged file is a CacheError ending in ``hint``."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:  # cut short or overwritten; pyarrow's errors are these
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CacheError(f"{path} is damaged ({why}); {hint}") from e


def read_json_object(path: Path, ints: Sequence[str] = ()) -> dict[str, Any]:
    """A JSON object whose ``ints`` keys hold integers; anything else is a CacheError."""
    try:
        obj = json.loads(path.read_bytes())
        for key in ints:
            int(obj[key])
    except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise CacheError(f"{path} is damaged ({type(e).__name__}: {e})") from e
    return obj


__all__ = ["read_json_object", "read_table"]
