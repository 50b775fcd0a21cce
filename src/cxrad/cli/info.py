"""Stage 10, cli: ``cxrad info`` prints versions, device and threads."""

from __future__ import annotations

import json
import os
import platform

import typer

from cxrad.cli.app import app, out_console


def environment() -> dict[str, object]:
    """Versions of cxrad and its key libraries, the compute device and thread count."""
    import lightning
    import monai
    import numpy
    import torch

    import cxrad

    cuda = torch.cuda.is_available()
    return {
        "cxrad": cxrad.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda": torch.version.cuda if cuda else None,
        "gpus": torch.cuda.device_count() if cuda else 0,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


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
        out_console.print(f"[bold]{k:>14}[/]  {v}")
