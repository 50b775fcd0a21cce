"""Stage 7, train: tiny end-to-end runs (run folder, reload, resume) and the CLI's errors."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from safetensors.torch import load_file

from cxrad.manifest import manifest_hash, read_manifest, write_manifest
from cxrad.models import load_run, probabilities
from cxrad.preprocess import PreprocessConfig, open_cache
from cxrad.train import per_class_auroc, train
from cxrad.train.fit import MovableCheckpoint
from helpers import make_tiny_work

TINY = {
    "model": "cxr-fast",
    "batch_size": 8,
    "size": 32,
    "progress": False,
    "seed": 3,
    "threads": 1,
}
CONFIG_KEYS = {
    "model", "classes", "input", "preprocess", "activation", "operating_points", "decision",
    "temperature", "manifest_hash", "git_commit", "train", "val_metrics", "best_epoch", "created",
    "cxrad_version", "version",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_work(tmp_path_factory.mktemp("tiny"), n_per_class=8, size=32)


@pytest.fixture(scope="module")
def run2(tiny_work: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 2-epoch run."""
    return train(tiny_work, out=tmp_path_factory.mktemp("runs") / "full", max_epochs=2, **TINY)


def val_images(work: Path, size: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    df = read_manifest(work)
    val = df[df["split"] == "val"]
    cache = open_cache(work, PreprocessConfig(size=size))
    x = torch.from_numpy(np.asarray(cache.images[cache.rows_for(val)], np.float32) / 255)[:, None]
    return x, val


def test_run_folder_has_weights_config_and_reloads(run2: Path, tiny_work: Path) -> None:
    assert (run2 / "model.safetensors").is_file()
    assert (run2 / "checkpoints" / "last.ckpt").is_file()
    assert list((run2 / "checkpoints").glob("best-*.ckpt"))
    metrics = (run2 / "logs" / "metrics.csv").read_text()
    assert "val_macro_auroc" in metrics.splitlines()[0]
    cfg = json.loads((run2 / "config.json").read_text())
    assert set(cfg) >= CONFIG_KEYS
    assert cfg["classes"] == [
        "EFFUSION",
        "NORMAL",
        "PNEUMONIA",
    ]  # CLASSES order, only those in train
    assert cfg["activation"] == "sigmoid"
    assert cfg["preprocess"] == {"size": 32, "mode": "letterbox", "crop": "none"}
    assert cfg["manifest_hash"] == manifest_hash(read_manifest(tiny_work))
    assert cfg["train"]["max_epochs"] == 2 and cfg["train"]["loss"] == "bce"
    assert cfg["best_epoch"] in (0, 1)
    assert cfg["environment"]["torch"] == torch.__version__
    assert cfg["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    ops = cfg["operating_points"]
    assert set(ops) == set(cfg["classes"])
    assert all(0 <= op["threshold"] <= 1 and op["method"] == "spec" for op in ops.values())
    # spec=0.95 on val: every class that val can score keeps at least 95% of its negatives
    assert all(op["val_specificity"] >= 0.95 for op in ops.values() if op["n_neg"])
    assert cfg["decision"]["policy"] == "triage_gate" and len(cfg["temperature"]) == 3

    model, cfg2 = load_run(run2)
    x, val = val_images(tiny_work)
    with torch.no_grad():
        probs = probabilities(model(x), cfg2).numpy()
    # the reloaded model reproduces the val metrics written at the end of training
    auc = per_class_auroc(probs, val[cfg["classes"]].to_numpy(np.float32), cfg["classes"])
    for c, v in cfg["val_metrics"]["auroc"].items():
        assert (v is None and auc[c] is None) or v == pytest.approx(auc[c], abs=1e-6)
    # ... and equals the best checkpoint's weights, not the last epoch's by accident
    best = next((run2 / "checkpoints").glob("best-*.ckpt"))
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    saved = load_file(str(run2 / "model.safetensors"))
    for k, v in saved.items():
        assert torch.equal(v, state["model." + k]), k


class Killed(Exception):
    pass


class KillAtEpoch(Callback):
    """Simulates a crash at the start of epoch ``epoch`` (after the previous one checkpointed)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        if trainer.current_epoch == self.epoch:
            raise Killed


def kill_after_first_epoch(work: Path, out: Path) -> Path:
    """A 2-epoch run into ``out`` that crashes when epoch 1 starts (epoch 0 is checkpointed)."""
    with pytest.raises(Killed):
        train(work, out=out, max_epochs=2, callbacks=[KillAtEpoch(1)], **TINY)
    return out


def assert_same_selection(reference: Path, run: Path) -> dict:
    """``run`` picked the same best epoch, with the same val AUROC, as ``reference``; its config."""
    a = json.loads((reference / "config.json").read_text())
    b = json.loads((run / "config.json").read_text())
    assert b["best_epoch"] == a["best_epoch"]
    assert b["val_metrics"]["macro_auroc"] == pytest.approx(
        a["val_metrics"]["macro_auroc"], abs=1e-6
    )
    return b


def test_resume_after_kill_matches_uninterrupted_run(
    run2: Path, tiny_work: Path, tmp_path: Path
) -> None:
    out = kill_after_first_epoch(tiny_work, tmp_path / "resumed")
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "config.json").exists()
    train(tiny_work, out=out, max_epochs=2, resume=True, **TINY)
    b = assert_same_selection(run2, out)
    assert b["epochs_run"] == 2
    wa, wb = load_file(str(run2 / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5), k
    last_a = torch.load(run2 / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    last_b = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for k, v in last_a["state_dict"].items():
        assert torch.allclose(v.float(), last_b["state_dict"][k].float(), atol=1e-5), k
    # the CSV log kept epoch 0 from before the crash and appended epoch 1
    epochs = [
        ln.split(",")[0] for ln in (out / "logs" / "metrics.csv").read_text().splitlines()[1:]
    ]
    assert "0" in epochs and "1" in epochs
    # resuming a finished run with more epochs continues it (the schedule stretches)
    train(tiny_work, out=out, max_epochs=3, resume=True, **TINY)
    c = json.loads((out / "config.json").read_text())
    assert c["epochs_run"] == 3 and c["train"]["max_epochs"] == 3
    epochs = [
        ln.split(",")[0] for ln in (out / "logs" / "metrics.csv").read_text().splitlines()[1:]
    ]
    assert {"0", "1", "2"} <= set(epochs)


def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    from cxrad.cli import main

    monkeypatch.setattr(sys, "argv", ["cxrad", "train", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    return int(e.value.code or 0), capsys.readouterr().err


def test_cli_softmax_run_summary(tiny_work: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    code, err = cli(
        monkeypatch, capsys, tiny_work, "--out", tmp_path / "sm", "--epochs", "1", "--size", "32",
        "--batch-size", "8", "--loss", "softmax", "--no-progress", "--limit-train", "12", "--threads", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "val macro AUROC" in err and "best epoch 0" in err
    model, cfg = load_run(tmp_path / "sm")
    assert cfg["activation"] == "softmax" and cfg["data"]["n_train"] == 12
    assert cfg["data"]["pos_weight"] is None
    x, _ = val_images(tiny_work)
    with torch.no_grad():
        p = probabilities(model(x), cfg)
    assert torch.allclose(p.sum(dim=1), torch.ones(len(x)), atol=1e-5)


def test_cli_errors_are_one_line(tiny_work: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "r"
    code, err = cli(monkeypatch, capsys, tmp_path / "nowhere", "--out", out)
    assert code == 2 and "cxrad ingest" in err
    code, err = cli(monkeypatch, capsys, tiny_work, "--out", out, "--size", "48")
    assert code == 2 and "cxrad preprocess" in err and "--size 48" in err
    code, err = cli(monkeypatch, capsys, tiny_work, "--out", out, "--loss", "softmx")
    assert code == 2 and "Did you mean 'softmax'" in err
    code, err = cli(monkeypatch, capsys, tiny_work, "--out", out, "--model", "cxr-fats")
    assert code == 2 and "cxr-fast" in err
    df = read_manifest(tiny_work)
    df["split"] = df["split"].where(df["split"] != "train", "test")
    no_train = tmp_path / "notrain"
    write_manifest(df, no_train)
    code, err = cli(monkeypatch, capsys, no_train, "--out", out)
    assert code == 2 and "'train' split" in err and "cxrad split" in err
    assert not out.exists() or not (out / "config.json").exists()


def test_resume_in_a_moved_run_folder_keeps_the_best_epoch(
    run2: Path, tiny_work: Path, tmp_path: Path
) -> None:
    before = kill_after_first_epoch(tiny_work, tmp_path / "before")
    after = tmp_path / "elsewhere" / "after"
    after.parent.mkdir()
    before.rename(after)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*dirpath has changed.*")
        train(tiny_work, out=after, max_epochs=2, resume=True, **TINY)
    b = assert_same_selection(run2, after)
    assert [p.name for p in (after / "checkpoints").glob("best-*.ckpt")] == [
        f"best-epoch{b['best_epoch']:03d}.ckpt"
    ]


def test_movable_checkpoint_re_roots_saved_paths(tmp_path: Path) -> None:
    old, new = "/old/run/checkpoints", str(tmp_path)
    cb = MovableCheckpoint(dirpath=new, monitor="val_macro_auroc", mode="max", save_top_k=1)
    best = f"{old}/best-epoch003.ckpt"
    cb.load_state_dict(
        {
            "monitor": "val_macro_auroc",
            "best_model_score": torch.tensor(0.98),
            "best_model_path": best,
            "current_score": torch.tensor(0.97),
            "dirpath": old,
            "best_k_models": {best: torch.tensor(0.98)},
            "kth_best_model_path": best,
            "kth_value": torch.tensor(0.98),
            "last_model_path": f"{old}/last.ckpt",
        }
    )
    assert float(cb.best_model_score) == pytest.approx(0.98)
    assert cb.best_model_path == f"{new}/best-epoch003.ckpt"
    assert list(cb.best_k_models) == [f"{new}/best-epoch003.ckpt"]
    assert cb.last_model_path == f"{new}/last.ckpt"


def test_movable_checkpoint_shares_model_checkpoints_state_key() -> None:
    kw = {"monitor": "val_macro_auroc", "mode": "max", "save_top_k": 1}
    assert MovableCheckpoint(**kw).state_key == ModelCheckpoint(**kw).state_key
    assert MovableCheckpoint(monitor=None).state_key == ModelCheckpoint(monitor=None).state_key


def test_rerunning_a_finished_run_keeps_its_best_epoch(
    run2: Path, tiny_work: Path, tmp_path: Path, caplog
) -> None:
    out = tmp_path / "again"
    shutil.copytree(run2, out)
    before = json.loads((run2 / "config.json").read_text())
    weights = load_file(str(run2 / "model.safetensors"))
    train(tiny_work, out=out, max_epochs=2, resume=True, **TINY)
    after = json.loads((out / "config.json").read_text())
    assert after["best_epoch"] == before["best_epoch"]
    for k, v in load_file(str(out / "model.safetensors")).items():
        assert torch.equal(v, weights[k]), k
    # The callback's state gone from last.ckpt (another version, a hand-edited folder): the
    # best-*.ckpt on disk is still found through the CSV log, with a warning, not last.ckpt.
    last = out / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    state["callbacks"] = {}
    torch.save(state, last)
    (out / "config.json").unlink()
    with caplog.at_level("WARNING", logger="cxrad.train.fit"):
        train(tiny_work, out=out, max_epochs=2, resume=True, **TINY)
    assert "lost track of its best epoch" in caplog.text
    assert json.loads((out / "config.json").read_text())["best_epoch"] == before["best_epoch"]


def test_no_resume_starts_over_instead_of_continuing(
    run2: Path, tiny_work: Path, tmp_path: Path
) -> None:
    """`--no-resume` removes the earlier run's checkpoints and log: 1 epoch means 1 epoch."""
    out = tmp_path / "fresh"
    shutil.copytree(run2, out)
    (out / "checkpoints" / "best-epoch099.ckpt").write_bytes(b"stale")  # nothing may pick it
    train(tiny_work, out=out, max_epochs=1, resume=False, **TINY)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["epochs_run"] == 1 and cfg["best_epoch"] == 0
    names = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    assert names == ["best-epoch000.ckpt", "last.ckpt"]
    log = pd.read_csv(next((out / "logs").rglob("metrics.csv")))
    assert set(log["epoch"].dropna().astype(int)) == {0}  # no rows of the old run's epochs


def test_a_second_train_into_a_busy_run_folder_is_refused(tiny_work: Path, tmp_path: Path) -> None:
    from cxrad.errors import TrainError
    from cxrad.folderlock import locked

    out = tmp_path / "busy"
    with locked(out, who="cxrad train"), pytest.raises(TrainError, match="another `cxrad train` is writing"):  # fmt: skip
        train(tiny_work, out=out, max_epochs=1, **TINY)
    assert not (out / "config.json").exists() and not (out / "checkpoints").exists()


def test_a_dead_trainers_lock_is_taken_over_and_released(tiny_work: Path, tmp_path: Path) -> None:
    import socket
    import subprocess

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)  # fmt: skip
    out = tmp_path / "crashed"
    out.mkdir()
    owner = {"host": socket.gethostname(), "pid": int(dead.stdout), "started": 0}
    (out / ".lock").write_text(json.dumps(owner))  # what a kill -9 leaves
    train(tiny_work, out=out, max_epochs=1, **TINY)
    assert (out / "config.json").is_file() and not (out / ".lock").exists()


def test_only_rank_zero_locks_the_run_folder(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from cxrad.errors import TrainError
    from cxrad.folderlock import folder_lock, is_rank_zero, locked

    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    assert is_rank_zero()
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP child Lightning started
    assert not is_rank_zero()
    with locked(tmp_path, who="cxrad train"), folder_lock(tmp_path, "cxrad train", TrainError):
        pass  # a rank > 0 shares the folder its rank 0 holds
