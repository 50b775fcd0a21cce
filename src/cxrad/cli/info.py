"""Stage 10, cli: ``cxrad info`` prints versions, device and threads."""

from __future__ import annotations

import json

import typer

from cxrad.cli.app import app, out_console
from cxrad.environment import environment


@app.command()
def info(
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Show versions, the compute device and the thread count."""
    env = environment()
    if as_json:
        out_console.print_json(json.dumps(env))
        return
    for k, v in env.items():
        shown = " ".join(v) if isinstance(v, list) else v
        out_console.print(f"[bold]{k:>14}[/]  {shown}")
