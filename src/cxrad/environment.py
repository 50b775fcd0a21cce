"""What a run was computed on: library versions, device, CPU kernels and threads.

Recorded in every run config (and printed by ``cxrad info``), because a short CPU training run
is chaotic: the same code, data and seed give bit-identical weights on one machine but a
different model where PyTorch dispatches other vector kernels (``cpu_capability``), so a
result that does not reproduce can be traced to the machine rather than the code.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4")
"""The vector-instruction flags that oneDNN and MKL choose kernels by, beyond ATen's level."""


def _cpuinfo(key: str, cpuinfo: Path) -> str:
    """The first ``key`` line's value in ``/proc/cpuinfo`` ("" when absent or unreadable)."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            k, _, value = line.partition(":")
            if k.strip() == key and value.strip():
                return value.strip()
    except OSError:
        pass
    return ""


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's marketing name (Linux ``model name``), else what :mod:`platform` reports."""
    return _cpuinfo("model name", cpuinfo) or platform.processor() or platform.machine()


def cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The CPU's vector-ISA flags, sorted.

    Two hosts that both report ``cpu_capability`` AVX512 can still run different oneDNN
    kernels (AMX, VNNI, BF16), and a virtual CPU's model name is often generic.
    """
    flags = _cpuinfo("flags", cpuinfo).split()
    return sorted(f for f in set(flags) if f.startswith(ISA_PREFIXES))


def environment() -> dict[str, object]:
    """Versions of cxrad and its key libraries, the compute device, CPU kernels and threads."""
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
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_isa": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
