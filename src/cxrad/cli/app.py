"""Stage 10, cli: the Typer app, shared console, progress bars and error handling.

Commands are thin: parse, call one library function, show progress, print a summary. A
:class:`cxrad.errors.CxradError` becomes a one-line reason on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cxrad.errors import OutputError
from cxrad.progress import Progress as ProgressFn

app = typer.Typer(
    name="cxrad",
    help=(
        "Chest X-ray anomaly detection.\n\n"
        "Pipeline: ingest DIR... --out WORK -> split WORK -> preprocess WORK -> "
        "train WORK --out RUN -> evaluate RUN --data WORK -> predict PATH..."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# stdout is reserved for machine-readable output (predict's JSON); humans read stderr.
err_console = Console(stderr=True)
out_console = Console()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log debug messages to stderr"),
) -> None:
    """Chest X-ray anomaly detection, from dataset folders to findings with heatmaps."""
    if verbose:
        setup_logging(verbose=True)


def writable_folder(path: Path | None, option: str = "--out", create: bool = True) -> None:
    """Fail now, not after the work, when ``path`` cannot be an output folder.

    Args:
        path: the folder (None: nothing to check).
        option: the option's name, for the message.
        create: make the folder now, as the command would; False only checks that the nearest
            existing folder above it can be written to (nothing is left behind on a later error).

    Raises:
        OutputError: ``path`` (or a folder above it) is a file, cannot be created, or is
            read-only.
    """
    if path is None:
        return
    here = path
    while not here.exists() and not create and here != here.parent:
        here = here.parent
    if here.exists() and not here.is_dir():
        raise OutputError(f"{option} {path}: {here} is a file; {option} needs a folder (a new or existing one)")  # fmt: skip
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{option} {path} cannot be created ({e.strerror or e}); choose a folder you can write to") from e  # fmt: skip
    if not os.access(here, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path} is read-only; choose a folder you can write to")


def setup_logging(verbose: bool = False) -> None:
    """Route library logs to stderr through Rich."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("lightning", "lightning.pytorch", "pytorch_lightning", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pydicom warns once per odd header element; the reader's typed reason already says why.
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def quiet_lightning() -> None:
    """Keep Lightning's banners (GPU available, tips) off stderr; its warnings still show.

    Lightning sets its own log level and handler when imported, which happens after
    :func:`setup_logging`, so the train command calls this after importing the training stack.
    """
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[ProgressFn]:
    """A Rich bar on stderr, exposed as a ``progress(done, total)`` callback for library code."""
    if not enabled:
        yield lambda done, total: None
        return
    cols = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*cols, console=err_console, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line reason and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
