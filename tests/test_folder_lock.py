"""Every command that writes a run or work folder holds its lock.

Run folders: train (one-class too), ensemble, adapt, fit-ood. Work folders: ingest, split,
ingest --relocate. A second writer is refused in one line that names the holder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrad.errors import AdaptError, ManifestError, SplitError, TrainError
from cxrad.folderlock import LOCK, folder_lock, locked
from helpers import make_tiny_work, synthetic_xray


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
    with folder_lock(out, "cxrad train", TrainError):
        with folder_lock(out, "cxrad fit-ood", TrainError):  # what train's own fit_run_ood does
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


def test_split_while_an_ingest_writes_the_work_folder_is_refused(tmp_path: Path) -> None:
    from cxrad.split import split_work

    work = make_tiny_work(tmp_path, 3, preprocess=False)
    before = (work / "manifest.parquet").read_bytes()
    with busy(work, "cxrad ingest"), pytest.raises(SplitError, match="another `cxrad ingest`"):
        split_work(work)
    assert (work / "manifest.parquet").read_bytes() == before


def test_ingest_into_a_work_folder_being_split_exits_2_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from cxrad.cli import main

    work, films = tmp_path / "work", tmp_path / "films" / "NORMAL"
    films.mkdir(parents=True)
    Image.fromarray(synthetic_xray("NORMAL", np.random.default_rng(0), 64)).save(films / "a.png")
    monkeypatch.setattr(sys, "argv", ["cxrad", "ingest", str(films.parent), "--out", str(work)])
    with busy(work, "cxrad split"), pytest.raises(SystemExit) as exc:
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert exc.value.code == 2 and "Traceback" not in err
    assert err.startswith("error: another `cxrad split` is writing")
    assert not (work / "manifest.parquet").exists()


def test_relocate_while_the_work_folder_is_busy_is_refused(tmp_path: Path) -> None:
    from cxrad.manifest.relocate import relocate

    work = make_tiny_work(tmp_path, 3, preprocess=False)
    with busy(work, "cxrad split"), pytest.raises(ManifestError, match="another `cxrad split`"):
        relocate(work, tmp_path / "old", tmp_path / "new")


def test_split_of_a_missing_work_folder_leaves_no_folder(tmp_path: Path) -> None:
    from cxrad.errors import CxradError
    from cxrad.split import split_work

    with pytest.raises(CxradError):
        split_work(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
