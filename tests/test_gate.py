"""Stage 5, gate: tag rules, pixel rules and the classifier's decision, on synthetic inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from cxrad.errors import GateError
from cxrad.gate import (
    CODES,
    GATE_CLASSES,
    GateClassifier,
    GateNet,
    InputGate,
    check_pixels,
    check_tags,
    read_info,
)
from cxrad.gate.result import GateResult
from helpers import make_dicom, synthetic_xray


@pytest.mark.parametrize("modality", ["CT", "MR", "US", "NM", "PT", "SEG"])
def test_non_xray_modality_is_rejected_by_tags(modality: str) -> None:
    v = check_tags({"Modality": modality})
    assert v is not None and v.code == "not_xray_modality" and v.by == "dicom_tags"
    assert not v.passed and modality in v.reason


def test_sop_class_decides_when_modality_is_missing() -> None:
    assert check_tags({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}).code == "not_xray_modality"
    assert check_tags({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.2"}).code == "not_chest"
    assert check_tags({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1"}) is None  # CR


@pytest.mark.parametrize(
    ("tags", "code"),
    [
        ({"Modality": "CR", "BodyPartExamined": "KNEE"}, "not_chest"),
        ({"Modality": "DX", "BodyPartExamined": "HAND"}, "not_chest"),
        ({"Modality": "MG"}, "not_chest"),
        ({"Modality": "RF"}, "not_radiograph"),
        ({"Modality": "DX", "BodyPartExamined": "CHEST", "ViewPosition": "LL"}, "lateral_view"),
        ({"Modality": "CR", "ViewPosition": "LATERAL"}, "lateral_view"),
    ],
)
def test_body_part_and_view_tags(tags: dict, code: str) -> None:
    assert check_tags(tags).code == code


@pytest.mark.parametrize(
    "tags",
    [
        {},
        {"Modality": "CR", "BodyPartExamined": "CHEST", "ViewPosition": "PA"},
        {"Modality": "DX", "BodyPartExamined": "THORAX", "ViewPosition": "AP"},
        {"Modality": "OT", "BodyPartExamined": "PORTABLE"},  # unknown: the classifier decides
    ],
)
def test_chest_or_unknown_tags_do_not_decide(tags: dict) -> None:
    assert check_tags(tags) is None


def test_read_info_of_a_dicom(tmp_path: Path) -> None:
    px = (np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) % 4096).astype(np.uint16)
    p = make_dicom(
        tmp_path / "ct.dcm", px, 12, Modality="CT", BodyPartExamined="ABDOMEN", ViewPosition=""
    )
    info = read_info(p)
    assert info["format"] == "dicom" and (info["width"], info["height"]) == (80, 64)
    assert info["Modality"] == "CT" and info["BodyPartExamined"] == "ABDOMEN"
    assert info["ViewPosition"] is None and info["colour"] is False


def test_read_info_tells_colour_from_grey_stored_as_rgb(tmp_path: Path) -> None:
    grey = synthetic_xray("NORMAL", np.random.default_rng(0), side=96)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "grey.png")
    colour = np.stack([grey, np.roll(grey, 20, 1), 255 - grey], -1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    arrow = np.stack([grey] * 3, -1)
    arrow[10:14, 10:30] = (255, 0, 0)  # a red arrow on a grey film is not a colour image
    Image.fromarray(arrow).save(tmp_path / "arrow.png")
    assert read_info(tmp_path / "grey.png")["colour"] is False
    assert read_info(tmp_path / "colour.png")["colour"] is True
    assert read_info(tmp_path / "arrow.png")["colour"] is False
    assert read_info(tmp_path / "grey.png")["format"] == "png"


def test_read_info_of_garbage_defers_to_the_decoder(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"not an image at all")
    assert read_info(tmp_path / "x.png")["format"] is None


def test_pixel_rules() -> None:
    rng = np.random.default_rng(0)
    film = synthetic_xray("NORMAL", rng, side=96)
    assert check_pixels(film) is None
    assert check_pixels(film[:40]).code == "too_small"
    flat = np.full((128, 128), 0.5, np.float32) + rng.normal(0, 0.003, (128, 128)).astype(
        np.float32
    )
    assert check_pixels(flat).code == "blank"
    assert check_pixels(np.zeros((100, 100), np.uint8)).code == "blank"
    v = check_pixels(film, {"colour": True})
    assert v.code == "not_radiograph" and v.by == "rules"
    assert check_pixels(film, min_side=100).code == "too_small"


def test_gate_rejects_by_tags_without_decoding(tmp_path: Path) -> None:
    px = np.full((64, 64), 100, np.uint16)
    p = make_dicom(tmp_path / "mr.dcm", px, 12, Modality="MR")
    raw = bytearray(p.read_bytes())
    p.write_bytes(bytes(raw[: len(raw) - 4000]))  # pixel data cut short: undecodable
    verdict, pixels = InputGate(None).check_file(p)
    assert verdict.code == "not_xray_modality" and pixels is None


def test_a_dicom_without_preamble_or_suffix_is_still_judged_by_its_tags(tmp_path: Path) -> None:
    """The gate finds DICOMs as the reader does (cxrad.image), not by the .dcm suffix alone."""
    ct = make_dicom(tmp_path / "ct.dcm", np.full((64, 64), 100, np.uint16), 12, Modality="CT")
    bare = tmp_path / "1.2.840.113619.2.55"  # a scanner UID as the name
    bare.write_bytes(ct.read_bytes()[132:])  # no preamble, no DICM marker
    info = read_info(bare)
    assert info["format"] == "dicom" and info["Modality"] == "CT"
    verdict, _ = InputGate(None).check_file(bare)
    assert verdict.code == "not_xray_modality"
    png = tmp_path / "film.dcm"  # a PNG named .dcm is read as the PNG it is
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, format="PNG")
    assert read_info(png)["format"] == "png"


def test_gate_without_classifier_passes_a_plain_film(tmp_path: Path) -> None:
    film = synthetic_xray("NORMAL", np.random.default_rng(1), side=96)
    Image.fromarray(film).save(tmp_path / "f.png")
    verdict, pixels = InputGate(None).check_file(tmp_path / "f.png")
    assert verdict == GateResult(True, None, None, "rules") and pixels.shape == (96, 96)
    assert verdict.to_record() == {"passed": True, "code": None, "score": None, "by": "rules"}


def _tiny_gate(folder: Path, bias: int, threshold: float = 0.5) -> Path:
    """A gate model whose output is decided by the head's bias (class ``bias`` wins)."""
    net = GateNet(len(GATE_CLASSES))
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.zero_()
        net.fc.bias[bias] = 10.0
    folder.mkdir()
    save_file(net.state_dict(), str(folder / "model.safetensors"))
    cfg = {"classes": list(GATE_CLASSES), "size": 64, "reject_threshold": threshold}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize(("winner", "code"), [(0, None), (1, "lateral_view"), (5, "inverted")])
def test_classifier_decision_and_codes(tmp_path: Path, winner: int, code: str | None) -> None:
    clf = GateClassifier.load(_tiny_gate(tmp_path / "g", winner))
    film = synthetic_xray("NORMAL", np.random.default_rng(2), side=96)
    v = InputGate(clf).check(film)
    assert v.by == "classifier" and v.code == code and v.passed == (code is None)
    assert 0.0 <= v.score <= 1.0 and (v.score < 0.5) == v.passed


def test_classifier_decide_uses_the_threshold(tmp_path: Path) -> None:
    clf = GateClassifier.load(_tiny_gate(tmp_path / "g", 0, threshold=0.3))
    probs = np.array([0.75, 0.05, 0.2, 0, 0, 0, 0])
    assert clf.decide(probs).passed  # doubt 0.25 < 0.3
    probs = np.array([0.6, 0.05, 0.35, 0, 0, 0, 0])
    v = clf.decide(probs)
    assert not v.passed and v.code == "not_chest" and v.score == pytest.approx(0.4)


def test_missing_gate_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="does not hold a gate model"):
        GateClassifier.load(tmp_path)


def test_a_gate_model_with_damaged_weights_is_a_user_error(tmp_path: Path) -> None:
    folder = _tiny_gate(tmp_path / "g", 0)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(GateError, match="does not hold a gate model"):
        GateClassifier.load(folder)


def test_every_code_is_reachable_and_stable() -> None:
    assert set(CODES) == {
        "not_xray_modality",
        "not_chest",
        "lateral_view",
        "not_radiograph",
        "blank",
        "too_small",
        "inverted",
        "rotated",
    }


def _document(side: int = 400) -> np.ndarray:
    im = Image.new("L", (side, int(side * 1.3)), 245)
    d = ImageDraw.Draw(im)
    for y in range(20, im.size[1] - 20, 18):
        d.text((20, y), "Lorem ipsum dolor sit amet, consectetur adipiscing elit 0123", fill=10)
    return np.asarray(im)


def test_shipped_gate_rejects_a_drawn_document() -> None:
    v = InputGate.default().check(_document())
    assert not v.passed and v.code == "not_radiograph" and v.by == "classifier"
