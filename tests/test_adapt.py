"""Stage 8b, adapt: a site whose scores moved gets its specificity back; a site with no positives is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrad.adapt import adapt_logits
from cxrad.errors import AdaptError
from cxrad.models import RunConfig, create_model, recalibrate, save_run
from cxrad.models.shift import score_reference
from helpers import synthetic_xray

CLASSES = ["EFFUSION", "NORMAL", "PNEUMONIA"]


def films(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of ``n`` films: a third of each class; ``shift`` moves every finding logit up."""
    kind = rng.integers(0, 3, n)
    y = np.zeros((n, 3))
    y[np.arange(n), kind] = 1.0
    z = rng.normal(-2.0, 1.0, (n, 3)) + 4.0 * y
    z[:, [0, 2]] += shift  # the site's films look sicker to the model than val's did
    return z, y


def val_fitted() -> RunConfig:
    rng = np.random.default_rng(0)
    z, y = films(rng, 600)
    base = RunConfig.from_dict({"model": {"name": "cxr-fast"}, "classes": CLASSES})
    cfg = recalibrate(base, z, y, "spec=0.95")
    return cfg.evolve(extra={**cfg.extra, "val_scores": score_reference(z, CLASSES)})


def test_adapt_recovers_target_specificity_on_a_shifted_site() -> None:
    cfg = val_fitted()
    rng = np.random.default_rng(1)
    z, y = films(rng, 300, shift=1.5)
    clusters = np.arange(300)
    fitted, rep = adapt_logits(cfg, z, y, clusters, n_boot=300, seed=0)
    per = {r["class"]: r for r in rep.per_class}
    for c in ("EFFUSION", "PNEUMONIA"):
        before, after = per[c]["before"]["specificity"], per[c]["after"]["specificity"]
        assert before["value"] < 0.85  # the shift broke the val operating point
        lo, hi = after["ci"]
        assert lo <= 0.95 <= hi, (c, after)  # cross-fitted, not measured on the fitting films
        assert per[c]["what"] == "refitted"
        assert fitted.threshold(c) > cfg.threshold(c)
        # the shift is reported against the run's val scores
        assert rep.shift[c]["mean_shift"] == pytest.approx(1.5, abs=0.35)
        assert rep.shift[c]["ks"] > 0.2
    assert abs(rep.shift["NORMAL"]["mean_shift"]) < 0.35
    json.dumps(rep.to_dict(), allow_nan=False)


def test_adapt_warns_on_few_positives_and_refuses_none() -> None:
    cfg = val_fitted()
    rng = np.random.default_rng(2)
    z, y = films(rng, 200)
    keep = (y[:, 0] == 0) | (np.cumsum(y[:, 0]) <= 4)  # only 4 EFFUSION films
    _, rep = adapt_logits(cfg, z[keep], y[keep], np.arange(keep.sum()), n_boot=50)
    assert any(w.startswith("EFFUSION: only 4 positive") for w in rep.warnings)
    normals = y[:, 1] == 1
    with pytest.raises(AdaptError, match="no positive finding"):
        adapt_logits(cfg, z[normals], y[normals], np.arange(normals.sum()), n_boot=50)


def test_cli_adapts_a_folder_and_refuses_one_without_positives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxrad.cli import main

    run = save_run(
        tmp_path / "run",
        create_model("cxr-fast", num_classes=3).eval(),
        {"model": {"name": "cxr-fast"}, "classes": CLASSES, "preprocess": {"size": 32}},
    )
    rng = np.random.default_rng(0)
    for cls, n in (("NORMAL", 25), ("PNEUMONIA", 12)):
        (tmp_path / "site" / cls).mkdir(parents=True)
        for i in range(n):
            img = synthetic_xray(cls, rng)
            Image.fromarray(img).save(tmp_path / "site" / cls / f"{i}.png")

    def cli(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["cxrad", "adapt", *args])
        with pytest.raises(SystemExit) as exc:
            main()
        return exc.value.code or 0, capsys.readouterr().err

    code, err = cli(
        str(run), "--data", str(tmp_path / "site"), "--out", str(tmp_path / "a"), "--n-boot", "50"
    )
    assert code == 0, err
    assert "sens before -> after" in err and "triage" in err and "EFFUSION: only 0" in err
    adapted = RunConfig.load(tmp_path / "a")
    assert adapted.extra["adapted"]["n_films"] == 37
    report = json.loads((tmp_path / "a" / "adapt.json").read_text())
    assert report["n_films"] == 37 and report["skipped"] == []
    (tmp_path / "site" / "notes").mkdir()
    code, err = cli(str(run), "--data", str(tmp_path / "site"), "--out", str(tmp_path / "c"), "--n-boot", "20")  # fmt: skip
    assert code == 0 and "skipped 1 paths" in err and "not a class name" in err
    skipped = json.loads((tmp_path / "c" / "adapt.json").read_text())["skipped"]
    assert [Path(s["path"]).name for s in skipped] == ["notes"]
    assert RunConfig.load(tmp_path / "c").extra["adapted"]["n_skipped"] == 1
    (tmp_path / "site" / "PNEUMONIA").rename(tmp_path / "away")
    code, err = cli(str(run), "--data", str(tmp_path / "site"), "--out", str(tmp_path / "b"))
    assert code == 2 and "no positive finding" in err


def _model_and_config() -> tuple[object, RunConfig]:
    cfg = RunConfig.from_dict(
        {"model": {"name": "cxr-fast"}, "classes": CLASSES, "preprocess": {"size": 32}}
    )
    return create_model("cxr-fast", num_classes=3).eval(), cfg


def test_a_work_folder_site_uses_its_cached_rows_and_names_the_rest(tmp_path: Path) -> None:
    from cxrad.adapt.site import load_site
    from cxrad.manifest import read_manifest, write_manifest
    from helpers import make_tiny_work

    work = make_tiny_work(tmp_path, n_per_class=4, size=32)
    df = read_manifest(work)
    extra = df.iloc[[0]].assign(image_id="tiny/extra.png", sha1="0" * 40, patient_id="tiny:new")
    write_manifest(pd.concat([df, extra], ignore_index=True), work)  # a row never preprocessed
    model, cfg = _model_and_config()
    site = load_site(model, cfg, work)
    assert site.logits.shape == (len(df), 3) and len(site.clusters) == len(df)
    assert site.skipped == [("tiny/extra.png", f"not in the cache; run `cxrad preprocess {work} --size 32 --mode letterbox`")]  # fmt: skip
    want = df[CLASSES].to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(np.sort(site.labels, axis=0), np.sort(want, axis=0))
    val = load_site(model, cfg, work, split="val")
    assert len(val.labels) == int((df["split"] == "val").sum()) and val.skipped == []


def test_a_folder_site_reads_dicoms_by_any_name_and_names_what_it_skips(tmp_path: Path) -> None:
    from cxrad.adapt.site import load_site
    from helpers import make_dicom

    rng = np.random.default_rng(3)
    site = tmp_path / "site"
    for cls, n in (("NORMAL", 2), ("pneumonia", 1)):
        (site / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(synthetic_xray(cls.upper(), rng)).save(site / cls / f"{i}.png")
    dcm = make_dicom(tmp_path / "x.dcm", (synthetic_xray("NORMAL", rng).astype(np.uint16) * 16), 12)
    dcm.rename(site / "NORMAL" / "1.2.840.113619.2.55")  # a PACS export's name
    (site / "pneumonia" / "broken.png").write_bytes(b"\x89PNG not really")
    (site / "misc").mkdir()
    Image.fromarray(synthetic_xray("NORMAL", rng)).save(site / "loose.png")
    model, cfg = _model_and_config()
    films = load_site(model, cfg, site)
    assert films.logits.shape == (4, 3)
    nan = np.nan
    want = [[0, 1, 0]] * 3 + [[nan, 0, 1]]  # EFFUSION, NORMAL, PNEUMONIA
    np.testing.assert_array_equal(films.labels, np.array(want, dtype=np.float64))
    reasons = {Path(p).name: why for p, why in films.skipped}
    assert set(reasons) == {"loose.png", "misc", "broken.png"}
    assert "class-named subfolder" in reasons["loose.png"] and "not a class name" in reasons["misc"]
    with pytest.raises(AdaptError, match="neither a work folder"):
        load_site(model, cfg, site / "loose.png")
    with pytest.raises(AdaptError, match="no readable films"):
        load_site(model, cfg, site / "misc")
