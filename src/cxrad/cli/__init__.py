"""Stage 10, cli: the ``cxrad`` command. One module per stage registers its subcommand."""

from __future__ import annotations

import sys

from rich.markup import escape

from cxrad.cli.app import app, err_console, setup_logging
from cxrad.errors import CxradError

# Importing registers each stage's command, in pipeline order.
from cxrad.cli import (  # noqa: F401  isort: skip
    info,
    ingest,
    split,
    preprocess,
    train,
    ood,
    evaluate,
    adapt,
    predict,
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
