"""Pool workers die with their parent, even after ``kill -9`` (issue #15, group 8).

A real process starts the pools cxrad uses (preprocess's forkserver pool, the hashing pool),
reports its workers' pids once they have run a task, and is killed with SIGKILL alone (not its
process group); its workers must be gone within a few seconds. A plain pool is the control:
its workers outlive the parent, which is the bug this guards against. The same holds one level
up: ``kill -9`` of a running ``cxrad preprocess -j 2`` leaves none of its processes behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import synth_layouts
from cxrad.ingest import ingest
from cxrad.manifest import write_manifest
from cxrad.preprocess.cache import CHUNK_SIZE
from cxrad.split import split_work

SRC = Path(__file__).resolve().parents[1] / "src"
SCRIPT = """
import sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from cxrad.parallel import process_pool
from cxrad.preprocess.cache import _pool

kind = sys.argv[1]
ex = {"forkserver": lambda: _pool(2), "fork": lambda: process_pool(2),
      "plain": lambda: ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))}[kind]()
import os
pids = set()
while len(pids) < 2:  # a task has run in each worker: its initializer is done
    pids |= {f.result() for f in [ex.submit(os.getpid) for _ in range(8)]}
for _ in range(2):
    ex.submit(time.sleep, 120)
print(" ".join(map(str, sorted(pids))), flush=True)
time.sleep(120)
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def start_and_kill(kind: str) -> list[int]:
    """Start the pool, kill its owner; the workers' pids and, for a forkserver, the server's."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, kind], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2, f"the pool did not start: {line!r}"
        assert all(alive(p) for p in pids)
        pids += sorted({ppid(p) for p in pids} - {proc.pid})  # the forkserver, if any
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone, as `kill -9 PID` does
        proc.wait(timeout=30)
    return pids


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


@pytest.mark.parametrize("kind", ["forkserver", "fork"])
def test_workers_die_with_a_killed_parent(kind: str) -> None:
    pids = start_and_kill(kind)
    assert len(pids) == (3 if kind == "forkserver" else 2)
    assert wait_gone(pids, 5.0) == []  # the workers, and the forkserver after them


def test_control_plain_pool_workers_outlive_their_parent() -> None:
    pids = start_and_kill("plain")
    assert len(pids) == 2
    try:
        time.sleep(1.5)
        assert [p for p in pids if alive(p)] == pids  # without the initializer they linger
    finally:
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)  # processes this test started


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                children.setdefault(ppid(int(d.name)), []).append(int(d.name))
            except (FileNotFoundError, ProcessLookupError):
                continue  # it exited while we looked
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.add(c)
            todo.append(c)
    return found


def stuck_work(tmp_path: Path) -> tuple[Path, Path]:
    """A split WORK of two chunks of tiny films; one film is then swapped for a FIFO.

    A worker reading the FIFO blocks until the test writes to it, so the run is certain to
    be in the middle of its work when it is killed (two chunks: one would run in-process).
    """
    root = synth_layouts.pediatric(tmp_path)
    extra = [f"train/NORMAL/IM-{i:04d}-0001.jpeg" for i in range(2000, 2000 + CHUNK_SIZE)]
    synth_layouts.tiny_images(root / "chest_xray", extra)
    df, _ = ingest(root, workers=1)
    work = tmp_path / "work"
    write_manifest(df, work)
    split_work(work, seed=0, workers=1)
    fifo = Path(df["path"].iloc[0])
    fifo.unlink()
    os.mkfifo(fifo)
    return work, fifo


def reader_waiting(fifo: Path) -> int | None:
    """A write end of ``fifo`` once some process has it open for reading (else None)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet
        return None


def test_kill_9_of_cxrad_preprocess_leaves_no_workers(tmp_path: Path) -> None:
    work, fifo = stuck_work(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    args = ["preprocess", str(work), "--size", "16", "-j", "2", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "cxrad", *args], env=env)
    below: set[int] = set()
    fd = None
    try:
        deadline = time.monotonic() + 60
        while fd is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            fd = reader_waiting(fifo)  # a worker is inside its chunk, blocked on this file
        assert fd is not None, f"no worker reached the film (exit code {proc.poll()})"
        below = descendants(proc.pid)
        assert len(below) >= 3, below  # the forkserver and two workers
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone, as `kill -9 PID` does
        proc.wait(timeout=30)
        assert wait_gone(sorted(below), 5.0) == []
    finally:
        for p in [*below, proc.pid]:
            if alive(p):
                os.kill(p, signal.SIGKILL)  # processes this test started
        if fd is not None:
            os.close(fd)
