"""Stage 2, manifest: the one schema every adapter writes, its I/O, and exports."""

from __future__ import annotations

from cxrad.manifest.io import manifest_hash, manifest_path, read_manifest, write_manifest
from cxrad.manifest.schema import (
    BASE_COLUMNS,
    SPLIT_COLUMNS,
    STATUS_OK,
    empty_manifest,
    make_rows,
    validate,
)

__all__ = [
    "BASE_COLUMNS",
    "SPLIT_COLUMNS",
    "STATUS_OK",
    "empty_manifest",
    "make_rows",
    "manifest_hash",
    "manifest_path",
    "read_manifest",
    "validate",
    "write_manifest",
]
