"""Every command that writes a run folder holds its lock: one-class train, ensemble, adapt, fit-ood."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrad.errors import AdaptError, TrainError
from cxrad.models.runlock import run_lock
from cxrad.preprocess.lock import LOCK, locked


def busy(out: Path, who: str = "cxrad train"):  # type: ignore[no-untyped-def]
    """A lock on ``out`` held by this process as another command would hold it."""
    return locked(out, who=who, error=TrainError)


def test_one_class_into_a_busy_run_folder_is_refused_before_reading(tmp_path: Path) -> None:
    from cxrad.train.oneclass import train_one_class

    out = tmp_path / "run"
    with busy(out), pytest.raises(TrainError, match="another `cxrad train` is writing"):
        train_one_class(tmp_path / "no-such-work", out)  # the work folder is never opened
    assert sorted(p.name for p in out.iterdir()) == []


def test_ensemble_into_a_busy_run_folder_is_refused(tmp_path: Path) -> None:
    from cxrad.train.ensemble import ensemble_runs

    out = tmp_path / "ens"
    with busy(out), pytest.raises(TrainError, match=f"is writing {out}"):
        ensemble_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "work", out)


def test_adapt_into_a_busy_run_folder_is_an_adapt_error(tmp_path: Path) -> None:
    from cxrad.adapt import adapt_run

    out = tmp_path / "site"
    with busy(out), pytest.raises(AdaptError, match="another `cxrad train` is writing"):
        adapt_run("default", tmp_path / "films", out)


def test_fit_ood_on_a_run_being_written_is_refused(tmp_path: Path) -> None:
    from cxrad.train.ood import fit_run_ood

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # enough for resolve_run; never loaded
    (run / "model.safetensors").write_bytes(b"")
    with busy(run, "cxrad adapt"), pytest.raises(TrainError, match="another `cxrad adapt`"):
        fit_run_ood(run, tmp_path / "work")


def test_the_message_names_the_command_that_holds_the_lock(tmp_path: Path) -> None:
    from cxrad.train.oneclass import train_one_class

    out = tmp_path / "run"
    with busy(out, "cxrad ensemble"), pytest.raises(TrainError) as err:
        train_one_class(tmp_path / "work", out)
    assert "another `cxrad ensemble` is writing" in str(err.value) and '"pid"' in str(err.value)


def test_the_lock_is_reentrant_in_one_process_and_released_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with run_lock(out):
        with run_lock(out, "cxrad fit-ood"):  # what train's own fit_run_ood does
            assert (out / LOCK).is_file()
        assert (out / LOCK).is_file()  # the inner block did not release the outer one
        (out / "config.json").write_text("{}")
    assert not (out / LOCK).exists() and (out / "config.json").is_file()
    with locked(out, who="cxrad train"):  # free again for another command
        pass


def test_a_refused_command_leaves_no_folder_and_no_lock(tmp_path: Path) -> None:
    from cxrad.adapt import adapt_run
    from cxrad.errors import CxradError

    out = tmp_path / "new" / "site"
    with pytest.raises(CxradError):
        adapt_run(tmp_path / "not-a-run", tmp_path / "films", out)
    assert not (tmp_path / "new").exists()  # nor the parent it had to create
    existing = tmp_path / "kept"
    existing.mkdir()
    with pytest.raises(CxradError):
        adapt_run(tmp_path / "not-a-run", tmp_path / "films", existing)
    assert existing.is_dir() and list(existing.iterdir()) == []  # not removed, and no lock left
