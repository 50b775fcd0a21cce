"""The machine facts every run records: a run that does not reproduce is traced to its CPU kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from cxrad.environment import cpu_isa, cpu_model, environment


def test_cpu_model_reads_the_linux_model_name(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon Gold 6338\n")
    assert cpu_model(info) == "Xeon Gold 6338"


def test_cpu_isa_keeps_the_vector_flags_that_pick_kernels(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nflags\t\t: fpu sse4_2 avx2 fma avx512f amx_tile avx512_bf16 avx2 ht\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    assert cpu_isa(info) == ["amx_tile", "avx2", "avx512_bf16", "avx512f", "fma", "sse4_2"]
    assert cpu_isa(tmp_path / "absent") == []


def test_cpu_model_without_cpuinfo_falls_back_to_platform(tmp_path: Path) -> None:
    name = cpu_model(tmp_path / "absent")
    assert isinstance(name, str) and name  # platform.processor() or the machine type


def test_environment_names_versions_kernels_and_threads() -> None:
    env = environment()
    assert env["torch"] == torch.__version__
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["cpu_isa"] == cpu_isa()
    json.dumps(env)  # it goes into config.json and metrics.json as is


def test_cpu_capability_records_the_kernels_torch_was_told_to_use() -> None:
    """``ATEN_CPU_CAPABILITY`` changes the kernels (and a short run's weights); the record shows it."""
    code = (
        "import json; from cxrad.environment import environment; print(json.dumps(environment()))"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout.splitlines()[-1])["cpu_capability"] == "DEFAULT"


def test_cxrad_info_prints_the_record() -> None:
    def info(*args: str) -> str:
        cmd = [sys.executable, "-m", "cxrad", "info", *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout

    as_json = json.loads(info("--json"))
    assert as_json == environment()
    table = info()
    assert "cpu_capability" in table and "[" not in table.split("cpu_isa")[1].split("\n")[0]
