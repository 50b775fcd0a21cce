"""Shared: map a function over chunks of work, in this process or a process pool, with progress.

Hashing (manifest) and fine hashing (split) both stream thousands of files through a pool in
fixed-size chunks; this is that loop, once. Every pool cxrad starts comes from
:func:`process_pool`, whose workers die with their parent, even when it is killed with
``kill -9`` (a pool's workers would otherwise wait on their queue for ever, ~100 MB each).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import TypeVar

from cxrad.progress import Progress

T = TypeVar("T")
R = TypeVar("R")

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal the kernel sends this process when its parent exits (Linux)."""
POLL_SECONDS = 1.0


def die_with_parent(owner: int | None = None) -> None:
    """Pool initializer: end this worker when ``owner`` (the process that made the pool) dies.

    A worker forked by the pool's owner has it as parent, and on Linux the kernel kills it when
    that parent exits (``prctl(PR_SET_PDEATHSIG, SIGKILL)``). A forkserver worker's parent is
    the forkserver, which outlives a killed owner (its workers keep its "alive" pipe open), so
    a daemon thread waits for the owner to exit (a pidfd, else polling) and ends the worker.
    """
    parent = os.getppid()
    owner = owner or parent
    if sys.platform.startswith("linux") and _set_pdeathsig() and os.getppid() != parent:
        os._exit(1)  # the parent died before prctl took effect
    if owner != parent or not sys.platform.startswith("linux"):
        threading.Thread(target=_watch, args=(owner,), daemon=True).start()


def _set_pdeathsig() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(owner: int) -> None:
    try:
        fd = os.pidfd_open(owner)  # readable once the owner has exited
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while pid_alive(owner):
            time.sleep(POLL_SECONDS)
    os._exit(1)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_pool(workers: int, context: BaseContext | None = None) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` whose workers die with this process (see :func:`die_with_parent`)."""
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),)
    )


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
        with process_pool(workers) as pool:
            collect(pool.map(fn, chunks))
    return results
