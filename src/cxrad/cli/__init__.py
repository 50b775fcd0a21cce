"""Stage 10, cli: the ``cxrad`` command. One module per stage registers its subcommand."""

from __future__ import annotations

import errno
import sys

from rich.markup import escape

from cxrad.cli.app import app, err_console, setup_logging
from cxrad.errors import CxradError

# Importing registers each stage's command, in pipeline order.
from cxrad.cli import (  # noqa: F401  isort: skip
    info,
    ingest,
    split,
    segment,
    preprocess,
    train,
    ood,
    evaluate,
    adapt,
    predict,
    serve,
)

__all__ = ["app", "main"]


def main() -> None:
    """Run the CLI; user errors become a one-line reason and exit code 2."""
    setup_logging()
    try:
        app()
    except CxradError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as e:
        if e.errno not in _ENVIRONMENT and e.filename is None:
            raise  # not about a path or the disk: a bug, keep its traceback
        err_console.print(f"[bold red]error:[/] {escape(os_error_message(e))}", highlight=False, soft_wrap=True)  # fmt: skip
        sys.exit(2)


_ENVIRONMENT = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT}  # fmt: skip


def os_error_message(e: OSError) -> str:
    """One line for a file-system failure: which path, what went wrong, what to do."""
    where = f"{e.filename}: " if e.filename else ""
    what = e.strerror or str(e)
    hint = {
        errno.ENOSPC: "free some disk space (or use another --out) and rerun; finished work is kept",
        errno.EDQUOT: "free some space in your quota and rerun",
        errno.EROFS: "the file system is read-only; choose a writable --out",
        errno.EACCES: "no permission; choose a folder you can write to, or fix its mode",
        errno.EPERM: "not permitted; choose a folder you can write to",
        errno.ENOTDIR: "a path component is a file, not a folder; choose another --out",
        errno.EISDIR: "expected a file there, found a folder",
    }.get(e.errno or 0, "check the path")
    return f"{where}{what}; {hint}"
