"""Stage 4, preprocess: the cache's fixed-size pack files, read with a bounded number open.

A cache holds its images in ``data/00000.u8``, ``data/00001.u8``, ...: raw ``uint8`` rows of
``S x S`` pixels, ``rows_per_file`` rows per file (the last may be shorter). Fixed-size files
can be copied, rsynced or uploaded one by one, and a manifest that grows only appends: the
last file grows and new files follow, so old files never change.

:class:`PackedImages` looks like the ``(N, S, S)`` array the training data reads, but keeps at
most ``max_open`` files mapped (least recently used first out), so a million images need no
more file descriptors than a thousand; it pickles as file names, so DataLoader workers reopen.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DATA = "data"
FILE_BYTES = 256 << 20
"""Target size of one pack file (256 MiB): ``rows_per_file = FILE_BYTES // (S * S)``."""
MAX_OPEN = 8
"""Pack files a reader keeps mapped at once."""


def rows_per_file(size: int, file_bytes: int = FILE_BYTES) -> int:
    """Rows of ``size x size`` bytes per pack file (at least 1)."""
    return max(1, int(file_bytes) // (size * size))


def file_name(k: int) -> str:
    """``data/00012.u8``: the ``k``-th pack file, relative to the cache folder."""
    return f"{DATA}/{k:05d}.u8"


def file_rows(n: int, per_file: int) -> list[int]:
    """Rows in each pack file for ``n`` rows in all."""
    full, rest = divmod(n, per_file)
    return [per_file] * full + ([rest] if rest else [])


class PackedImages:
    """A read-only ``(N, S, S)`` uint8 view over the pack files, with bounded open files.

    Supports ``len``, ``shape``, ``dtype``, ``x[i]`` (a read-only view), and ``x[rows]`` /
    ``x[a:b]`` (a copy).
    """

    def __init__(
        self, directory: Path, n: int, size: int, per_file: int, max_open: int = MAX_OPEN
    ) -> None:
        self.directory = Path(directory)
        self.n, self.size, self.per_file = int(n), int(size), int(per_file)
        self.max_open = max(1, int(max_open))
        self._open: OrderedDict[int, np.memmap] = OrderedDict()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n, self.size, self.size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def __len__(self) -> int:
        return self.n

    def files(self) -> list[Path]:
        """The pack files, in row order."""
        return [self.directory / file_name(k) for k in range(len(file_rows(self.n, self.per_file)))]

    def _file(self, k: int) -> np.memmap:
        m = self._open.get(k)
        if m is not None:
            self._open.move_to_end(k)
            return m
        rows = file_rows(self.n, self.per_file)[k]
        m = np.memmap(
            self.directory / file_name(k), np.uint8, "r", shape=(rows, self.size, self.size)
        )
        self._open[k] = m
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)  # the mapping closes its descriptor when collected
        return m

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.n if key < 0 else 0)
            if not 0 <= i < self.n:
                raise IndexError(f"row {key} out of range for {self.n} cached images")
            return self._file(i // self.per_file)[i % self.per_file]
        if isinstance(key, slice):
            key = np.arange(self.n)[key]
        rows = np.asarray(key, dtype=np.int64).ravel()
        out = np.empty((len(rows), self.size, self.size), np.uint8)
        for j, r in enumerate(rows):
            out[j] = self[int(r)]
        return out.reshape((*np.shape(key), self.size, self.size))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self[np.arange(self.n)]
        return arr if dtype is None else arr.astype(dtype)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # reopened by name in the unpickling process
        return state


class PackWriter:
    """Appends rows after the committed ones; files already full are never opened.

    ``n_committed`` rows exist; bytes after them (a crash's leftovers) are cut off first.
    At most one file is open at a time.
    """

    def __init__(self, directory: Path, n_committed: int, size: int, per_file: int) -> None:
        self.directory, self.size, self.per_file = Path(directory), size, per_file
        self.n = n_committed
        self.bytes_written = 0
        self._fh: Any = None
        self._k = -1
        (self.directory / DATA).mkdir(parents=True, exist_ok=True)
        truncate_to(self.directory, n_committed, size, per_file)

    def append(self, image: np.ndarray) -> None:
        k = self.n // self.per_file
        if k != self._k:
            self.close()
            self._fh = open(self.directory / file_name(k), "ab")  # noqa: SIM115 (closed in close)
            self._k = k
        data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
        self._fh.write(data)
        self.bytes_written += len(data)
        self.n += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            self._k = -1


def truncate_to(directory: Path, n: int, size: int, per_file: int) -> None:
    """Cut the pack files back to exactly ``n`` committed rows; delete files past them."""
    rows = file_rows(n, per_file)
    data = Path(directory) / DATA
    if not data.is_dir():
        return
    keep = {file_name(k).split("/")[1]: r * size * size for k, r in enumerate(rows)}
    for p in sorted(data.iterdir()):
        want = keep.get(p.name)
        if want is None:
            p.unlink()
        elif p.stat().st_size > want:
            os.truncate(p, want)


def present(directory: Path, n: int, size: int, per_file: int) -> Sequence[str]:
    """Names of pack files that are missing or shorter than ``n`` rows need (empty: all there)."""
    bad = []
    for k, r in enumerate(file_rows(n, per_file)):
        p = Path(directory) / file_name(k)
        if not p.is_file() or p.stat().st_size < r * size * size:
            bad.append(file_name(k))
    return bad
