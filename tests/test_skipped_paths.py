"""Every skipped path is counted by reason: symlinked folders are followed; loops, dangling
links, FIFOs and unreadable folders are reported (ingest summary, predict records)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrad.image import walk_files
from cxrad.image.walk import DANGLING_LINK, NOT_REGULAR, SYMLINK_LOOP, UNREADABLE_FOLDER
from cxrad.ingest import ingest
from cxrad.predict import find_inputs


def _tree(tmp: Path) -> Path:
    """A Kaggle-like layout whose NORMAL folder is a symlink, with every awkward path kind."""
    real = tmp / "elsewhere" / "NORMAL"
    real.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(real / f"n{i}.png")
    root = tmp / "data" / "chest_xray" / "train"
    (root / "PNEUMONIA").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
        root / "PNEUMONIA" / "p.png"
    )
    (root / "NORMAL").symlink_to(real, target_is_directory=True)
    (root / "PNEUMONIA" / "loop").symlink_to(root, target_is_directory=True)
    (root / "PNEUMONIA" / "gone.png").symlink_to(tmp / "nowhere.png")
    os.mkfifo(root / "PNEUMONIA" / "pipe.png")
    locked = root / "PNEUMONIA" / "locked"
    locked.mkdir()
    locked.chmod(0)
    return tmp / "data"


@pytest.fixture
def tree(tmp_path: Path):
    root = _tree(tmp_path)
    yield root
    (root / "chest_xray" / "train" / "PNEUMONIA" / "locked").chmod(0o755)


def _can_lock(tree: Path) -> bool:
    return not os.access(tree / "chest_xray" / "train" / "PNEUMONIA" / "locked", os.R_OK)


def test_walk_follows_links_and_reports_the_rest(tree: Path) -> None:
    w = walk_files(tree)
    names = sorted(p.name for p in w.files)
    assert names == ["n0.png", "n1.png", "p.png"]  # the symlinked NORMAL folder is followed
    reasons = {r.split(":")[0] for _, r in w.skipped}
    assert {SYMLINK_LOOP, DANGLING_LINK, NOT_REGULAR} <= reasons
    if _can_lock(tree):  # root ignores permissions
        assert UNREADABLE_FOLDER in reasons


def test_ingest_counts_skipped_paths_in_the_summary(tree: Path) -> None:
    df, summary = ingest(tree, hash_images=False)
    assert (df["status"] == "ok").sum() == 3
    by_reason = summary["roots"][0]["not_ingested"]["by_reason"]
    assert by_reason[SYMLINK_LOOP] == 1 and by_reason[DANGLING_LINK] == 1
    assert by_reason[NOT_REGULAR] == 1
    assert any("dangling link" in n for n in summary["notes"])


def test_predict_gets_a_record_for_every_skipped_path(tree: Path) -> None:
    found = find_inputs([tree])
    ok = [f for f in found if f.skipped is None]
    skipped = {f.skipped.split(":")[0] for f in found if f.skipped}
    assert sorted(f.path.name for f in ok) == ["n0.png", "n1.png", "p.png"]
    assert {SYMLINK_LOOP, DANGLING_LINK, NOT_REGULAR} <= skipped


def test_each_skipped_path_is_a_predict_record_with_its_reason(tree: Path, tmp_path: Path) -> None:
    from cxrad.predict import Predictor
    from serve_support import make_run

    predictor = Predictor.from_run(make_run(tmp_path / "run"))
    records = list(predictor.predict_many([tree]))
    ok = sorted(Path(r["image"]).name for r in records if r["status"] == "ok")
    assert ok == ["n0.png", "n1.png", "p.png"]
    skipped = {Path(r["image"]).name: r for r in records if r["status"] != "ok"}
    assert {"loop", "gone.png", "pipe.png"} <= set(skipped)
    for name, reason in (
        ("loop", SYMLINK_LOOP),
        ("gone.png", DANGLING_LINK),
        ("pipe.png", NOT_REGULAR),
    ):
        r = skipped[name]
        assert r["status"] == "error" and r["code"] == "skipped", r
        assert reason in r["reason"] and r["probabilities"] == {} and r["positive"] == []
        assert r["run"]["name"] == "seed-fcn"  # it names the run, like every record
