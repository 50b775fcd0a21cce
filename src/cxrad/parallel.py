"""Shared: map a function over chunks of work, in this process or a process pool, with progress.

Hashing (manifest) and fine hashing (split) both stream thousands of files through a pool in
fixed-size chunks; this is that loop, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from cxrad.progress import Progress

T = TypeVar("T")
R = TypeVar("R")


def map_chunks(
    fn: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    chunk: int,
    workers: int = 1,
    progress: Progress | None = None,
) -> list[R]:
    """``fn`` over ``items`` in chunks of ``chunk``, results in input order.

    Args:
        fn: maps one chunk to one result per item; must be picklable (module level) for a pool.
        items: the work.
        chunk: items per call; also how often ``progress`` is called.
        workers: processes; 1 (or a single chunk of work) runs in this process.
        progress: ``progress(done, total)`` after each chunk.
    """
    total = len(items)
    chunks = [items[i : i + chunk] for i in range(0, total, chunk)]
    results: list[R] = []
    if progress:
        progress(0, total)

    def collect(parts: Iterable[list[R]]) -> None:
        for part in parts:
            results.extend(part)
            if progress:
                progress(len(results), total)

    if workers <= 1 or total <= chunk:
        collect(map(fn, chunks))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            collect(pool.map(fn, chunks))
    return results
