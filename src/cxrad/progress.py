"""Progress reporting without drawing: library code calls a callback; only the CLI draws bars."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Called as ``progress(done, total)`` while long work advances; ``total`` may be 0 if unknown."""

    def __call__(self, done: int, total: int) -> None: ...


def noop(done: int, total: int) -> None:
    """A :class:`Progress` that ignores updates."""
