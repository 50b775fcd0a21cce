"""Stage 7, train: what ``hardware`` picks for a GPU node, checked here without one.

The CI machine has no GPU, so the choices a GPU run depends on (mixed precision, DDP for
several devices, loader workers) are checked with ``torch.cuda`` stubbed as a GPU node reports.
"""

from __future__ import annotations

import os

import pytest
import torch

from cxrad.errors import TrainError
from cxrad.train.setup import cpu_threads, hardware, jsonable_devices, parse_devices


@pytest.fixture(autouse=True)
def _keep_threads():  # type: ignore[no-untyped-def]
    """``hardware`` sets torch's thread count; put it back for the other tests."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def gpu_node(monkeypatch):  # type: ignore[no-untyped-def]
    """``torch.cuda`` as a 4-GPU bf16 node reports it; returns a setter for bf16 support."""
    bf16 = {"ok": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16["ok"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    return lambda ok: bf16.update(ok=ok)


def test_a_gpu_node_trains_in_bf16_with_ddp_over_its_devices(gpu_node) -> None:  # type: ignore[no-untyped-def]
    hw = hardware("auto", "auto", 1, None, None)
    assert (hw.name, hw.gpu, hw.precision, hw.strategy) == (
        "NVIDIA H200",
        True,
        "bf16-mixed",
        "ddp",
    )
    assert hw.workers == min(4, max(cpu_threads() // 2, 1))


def test_a_card_without_bf16_uses_fp16_with_loss_scaling(gpu_node) -> None:  # type: ignore[no-untyped-def]
    gpu_node(False)
    assert hardware("gpu", 1, 1, None, 2).precision == "16-mixed"


@pytest.mark.parametrize(
    ("devices", "nodes", "strategy"),
    [
        (1, 1, "auto"),
        ("0", 1, "auto"),
        ("0,1", 1, "ddp"),
        ([2, 3], 1, "ddp"),
        (1, 2, "ddp"),
        (0, 1, "ddp"),
    ],
)
def test_ddp_exactly_when_more_than_one_device_or_node(
    gpu_node, devices: object, nodes: int, strategy: str
) -> None:  # type: ignore[no-untyped-def]
    assert hardware("gpu", devices, nodes, None, 0).strategy == strategy  # type: ignore[arg-type]


def test_a_chosen_precision_and_worker_count_are_kept(gpu_node) -> None:  # type: ignore[no-untyped-def]
    hw = hardware("cuda", 1, 1, "32-true", 7)
    assert (hw.precision, hw.workers) == ("32-true", 7)


def test_asking_for_a_gpu_without_one_says_to_use_the_cpu(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainError, match="--accelerator cpu"):
        hardware("gpu", 1, 1, None, None)


def test_the_cpu_trains_in_float32_with_the_threads_asked_for(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    hw = hardware("auto", "auto", 1, None, None, threads=1)
    assert (hw.name, hw.gpu, hw.precision, hw.strategy, hw.workers) == (
        "cpu",
        False,
        "32-true",
        "auto",
        0,
    )
    assert torch.get_num_threads() == 1
    hardware("cpu", 1, 1, None, None)
    assert torch.get_num_threads() == cpu_threads()


def test_cpu_threads_falls_back_to_the_cpu_count(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def no_affinity(_: int) -> set[int]:
        raise OSError("not on this platform")

    monkeypatch.setattr(os, "sched_getaffinity", no_affinity)
    assert cpu_threads() == (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("auto", "auto"), ("2", 2), (" 3 ", 3), ("0,1", [0, 1]), ("1,", [1]), ("-1", -1)],
)
def test_devices_parse_as_lightning_takes_them(text: str, parsed: object) -> None:
    assert parse_devices(text) == parsed


def test_devices_are_recorded_as_json_can_hold_them() -> None:
    assert jsonable_devices((0, 1)) == [0, 1] and jsonable_devices("auto") == "auto"
    assert jsonable_devices(2) == 2
