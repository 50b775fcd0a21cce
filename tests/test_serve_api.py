"""Serve stage: every endpoint and every error code of the REST API, on a tiny model."""

from __future__ import annotations

import asyncio
import base64
import io
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cxrad.predict import Predictor
from cxrad.serve import ServeSettings, create_app
from helpers import make_dicom
from serve_support import CLASSES, SIZE, THRESHOLDS, dicom_without_pixels, encode, film, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def predictor(run: Path) -> Predictor:
    return Predictor.from_run(run, batch_size=1)


def app_for(run: Path, predictor: Predictor | None = None, **settings: object):
    settings.setdefault("gate", False)  # synthetic films: the gate has its own tests
    s = ServeSettings(model=str(run), **settings)  # type: ignore[arg-type]
    return create_app(s, load=(lambda _s: predictor) if predictor else None)


@pytest.fixture(scope="module")
def client(run: Path):
    with TestClient(app_for(run)) as c:
        yield c


def upload(data: bytes, name: str = "film.png", mime: str = "image/png") -> dict:
    return {"file": (name, data, mime)}


def decode_png(url: str) -> np.ndarray:
    head, b64 = url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"code", "message"} and body["code"] == code, body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


# -- endpoints ---------------------------------------------------------------------------------


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": "seed-fcn", "in_flight": 0}


def test_ready_is_503_until_the_lifespan_has_loaded_the_model(run: Path) -> None:
    c = TestClient(app_for(run))  # not entered: no lifespan, no model
    assert c.get("/healthz").status_code == 200
    assert_error(c.get("/readyz"), 503, "not_ready")
    assert_error(c.get("/v1/model"), 503, "not_ready")


def test_model_info(client: TestClient) -> None:
    info = client.get("/v1/model").json()
    assert info["name"] == "seed-fcn"
    assert info["classes"] == CLASSES
    assert info["thresholds"] == THRESHOLDS
    assert info["input"]["formats"] == ["png", "jpeg", "dicom"]
    assert info["input"]["size"] == SIZE and info["input"]["mode"] == "letterbox"
    assert info["model_card"]["val_macro_auroc"] == 0.5
    assert "not for diagnosis" in info["model_card"]["intended_use"]


def test_model_card_names_the_run_as_each_prediction_does(client: TestClient) -> None:
    """The card and a record's ``run`` block come from one place, so they cannot disagree."""
    card = client.get("/v1/model").json()["model_card"]
    rec = client.post("/v1/predict", files=upload(encode(film(seed=3), "PNG"))).json()
    assert len(rec["run"]) >= 8 and rec["run"]["name"] == "seed-fcn"
    assert {k: card[k] for k in rec["run"]} == rec["run"]


@pytest.mark.parametrize(
    ("name", "fmt", "mime"),
    [("a.png", "PNG", "image/png"), ("b.jpg", "JPEG", "image/jpeg"), ("noext", "PNG", "x/y")],
)
def test_predict_returns_the_predictor_record(
    client: TestClient, predictor: Predictor, tmp_path: Path, name: str, fmt: str, mime: str
) -> None:
    data = encode(film(seed=1), fmt)
    r = client.post("/v1/predict", files=upload(data, name, mime))
    assert r.status_code == 200, r.text
    rec = r.json()
    (tmp_path / name).write_bytes(data)
    want = predictor.predict(tmp_path / name)
    assert rec["path"] == name
    assert rec["status"] == "ok"
    assert rec["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
    assert rec["image"] == name and rec["findings"][0]["class"] == "EFFUSION"
    assert rec["positive"] == want["positive"] == ["EFFUSION"]
    assert set(want) <= set(rec)  # every key the predictor gives passes through
    assert rec["heatmaps"] is None and rec["preview"] is None


def test_predict_dicom(client: TestClient, predictor: Predictor, tmp_path: Path) -> None:
    pixels = (film(seed=2).astype(np.uint16) * 16).astype(np.uint16)
    path = make_dicom(tmp_path / "x.dcm", pixels, bits_stored=12)
    r = client.post("/v1/predict", files=upload(path.read_bytes(), "chest", "application/dicom"))
    assert r.status_code == 200, r.text
    assert r.json()["probabilities"] == pytest.approx(
        predictor.predict(path)["probabilities"], abs=1e-6
    )


def test_heatmaps_and_preview_are_png_data_at_model_geometry(client: TestClient) -> None:
    r = client.post(
        "/v1/predict?heatmaps=true&preview=true", files=upload(encode(film(seed=3)), "c.png")
    )
    rec = r.json()
    assert set(rec["heatmaps"]) == {"EFFUSION"}  # the positive findings (NORMAL never)
    overlay = decode_png(rec["heatmaps"]["EFFUSION"])
    assert overlay.shape == (SIZE, SIZE, 3) and overlay.std() > 0
    preview = decode_png(rec["preview"])
    assert preview.shape == (SIZE, SIZE)
    assert "/tmp" not in r.text and "cxrad-serve-" not in r.text


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/model", "/healthz", "/readyz"} <= set(paths)
    assert "413" in paths["/v1/predict"]["post"]["responses"]
    assert client.get("/").text.lower().startswith("<!doctype html>")


# -- error codes -------------------------------------------------------------------------------


def test_404_405_and_validation_errors(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/v1/predict"), 405, "method_not_allowed")
    assert_error(client.post("/v1/predict"), 422, "invalid_request")
    assert_error(
        client.post("/v1/predict?heatmaps=maybe", files=upload(encode(film()))),
        422,
        "invalid_request",
    )


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"this is not an image\n", "not_an_image"),
        (encode(film())[:300], "truncated"),
        (b"", "empty_file"),
    ],
)
def test_unreadable_uploads_are_422_with_a_reason(
    client: TestClient, data: bytes, code: str
) -> None:
    body = assert_error(client.post("/v1/predict", files=upload(data, "bad.png")), 422, code)
    assert "cxrad-serve-" not in body["message"] and "/tmp" not in body["message"]


def test_upload_over_the_size_limit_is_413(run: Path) -> None:
    with TestClient(app_for(run, max_upload_bytes=2000)) as c:
        small = encode(film(side=32))
        assert c.post("/v1/predict", files=upload(small)).status_code == 200
        big = encode(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))
        assert_error(c.post("/v1/predict", files=upload(big)), 413, "too_large")

        def chunks():  # no Content-Length: counted as it streams
            yield b"x" * 100_000

        r = c.post(
            "/v1/predict",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert_error(r, 413, "too_large")


def test_image_over_the_pixel_cap_is_422(run: Path, tmp_path: Path) -> None:
    with TestClient(app_for(run, max_pixels=64 * 64)) as c:
        assert c.post("/v1/predict", files=upload(encode(film(side=64)))).status_code == 200
        body = assert_error(
            c.post("/v1/predict", files=upload(encode(film(side=65)))), 422, "too_many_pixels"
        )
        assert "65x65" in body["message"]
        dcm = make_dicom(tmp_path / "big.dcm", np.zeros((80, 80), np.uint16), bits_stored=12)
        assert_error(
            c.post("/v1/predict", files=upload(dcm.read_bytes(), "big.dcm")), 422, "too_many_pixels"
        )


def test_bearer_token(run: Path) -> None:
    with TestClient(app_for(run, token="s3cret")) as c:
        assert_error(c.get("/v1/model"), 401, "unauthorized")
        r = c.get("/v1/model", headers={"Authorization": "Bearer wrong"})
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        ok = c.post(
            "/v1/predict", files=upload(encode(film())), headers={"Authorization": "bearer s3cret"}
        )
        assert ok.status_code == 200
        assert c.get("/healthz").status_code == 200  # probes stay open


def test_cors_is_off_by_default_and_opt_in(run: Path) -> None:
    pre = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST"}
    with TestClient(app_for(run)) as c:
        r = c.options("/v1/predict", headers=pre)
        assert "access-control-allow-origin" not in r.headers
    with TestClient(app_for(run, cors_origins=("http://elsewhere.example",))) as c:
        r = c.options("/v1/predict", headers=pre)
        assert r.headers["access-control-allow-origin"] == "http://elsewhere.example"


def test_a_bug_is_500_json_without_traceback(run: Path) -> None:
    p = Predictor.from_run(run, batch_size=1)

    def broken(*_a: object, **_k: object) -> dict:
        raise RuntimeError("secret internals")

    p.predict = broken  # type: ignore[method-assign]
    with TestClient(app_for(run, p), raise_server_exceptions=False) as c:
        body = assert_error(c.post("/v1/predict", files=upload(encode(film()))), 500, "internal")
        assert "secret internals" not in body["message"]


def slow(run: Path, seconds: float) -> Predictor:
    p = Predictor.from_run(run, batch_size=1)
    real = p.predict

    def predict(*a: object, **k: object) -> dict:
        time.sleep(seconds)
        return real(*a, **k)

    p.predict = predict  # type: ignore[method-assign]
    return p


async def _gather(app, requests: list[tuple[str, bytes]]) -> list[httpx.Response]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await asyncio.gather(
                *(c.post(url, files=upload(data)) for url, data in requests)
            )


def test_full_queue_is_503_with_retry_after(run: Path) -> None:
    app = app_for(run, slow(run, 0.5), concurrency=1, queue=1, retry_after_s=3)
    rs = asyncio.run(_gather(app, [("/v1/predict", encode(film(seed=i))) for i in range(4)]))
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 200, 503, 503]
    for r in rs:
        if r.status_code == 503:
            assert_error(r, 503, "busy")
            assert r.headers["retry-after"] == "3"


def test_slow_work_is_504_and_its_temp_folder_still_goes(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with TestClient(app_for(run, slow(run, 0.6), timeout_s=0.1)) as c:
        assert_error(c.post("/v1/predict", files=upload(encode(film()))), 504, "timeout")
        assert list(tmp_path.glob("cxrad-serve-*"))  # the work is still running...
    # ...and leaving the lifespan waits for it, and its folder is gone.
    assert not list(tmp_path.glob("cxrad-serve-*"))


def test_uploads_stay_in_a_private_temp_folder_that_is_removed(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    seen: list[list[Path]] = []
    original = Predictor.predict

    def spy(self: Predictor, item: object, **k: object) -> dict:
        seen.append(sorted(p for p in (tmp_path / "tmp").rglob("*") if p.is_file()))
        return original(self, item, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Predictor, "predict", spy)
    name = "../../../../etc/evil.png"
    r = client.post("/v1/predict?heatmaps=true", files=upload(encode(film()), name))
    assert r.status_code == 200 and r.json()["path"] == "evil.png"
    client.post("/v1/predict", files=upload(b"junk", "x.png"))
    (files,) = seen[:1]
    assert len(files) == 1 and files[0].name == "upload.png"
    assert files[0].parent.name.startswith("cxrad-serve-")
    assert not list((tmp_path / "tmp").iterdir())  # all removed, after success and failure
    assert not (tmp_path / "etc").exists()


def test_concurrent_heatmap_and_plain_requests_match_sequential_ones(run: Path) -> None:
    films = [encode(film(kind, seed=i)) for i, kind in enumerate(["PNEUMONIA", "EFFUSION"] * 3)]
    urls = ["/v1/predict?heatmaps=true", "/v1/predict"] * 3
    app = app_for(run, concurrency=4, queue=8)
    with TestClient(app) as c:
        want = [c.post(u, files=upload(d)).json() for u, d in zip(urls, films, strict=True)]
    got = asyncio.run(
        _gather(app_for(run, concurrency=4, queue=8), list(zip(urls, films, strict=True)))
    )
    assert all(r.status_code == 200 for r in got)
    for w, g in zip(want, got, strict=True):
        g = g.json()
        assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-6)
        if w["heatmaps"]:
            a = decode_png(w["heatmaps"]["EFFUSION"]).astype(int)
            b = decode_png(g["heatmaps"]["EFFUSION"]).astype(int)
            assert np.abs(a - b).max() <= 1


def test_threads_do_not_leak(run: Path) -> None:
    before = threading.active_count()
    with TestClient(app_for(run)) as c:
        c.post("/v1/predict", files=upload(encode(film())))
    time.sleep(0.1)
    assert threading.active_count() <= before + 1


# -- real films --------------------------------------------------------------------------------


@pytest.mark.data
def test_real_films_png_jpeg_dicom_give_the_cli_record(
    client: TestClient, predictor: Predictor, shared_data: Path
) -> None:
    xrv = shared_data / "fixtures" / "xrv-tests"
    ped = shared_data / "kaggle-pediatric-pneumonia" / "chest_xray" / "test" / "NORMAL"
    films = [
        sorted((shared_data / "nih-chestxray14" / "images").glob("*.png"))[0],
        sorted(ped.glob("*.jpeg"))[0],
        *sorted(xrv.glob("*.dcm")),  # a real SIIM DICOM (MONOCHROME2) and a MONOCHROME1 one
        shared_data
        / "fixtures"
        / "nih-original-1024"
        / sorted(p.name for p in (shared_data / "fixtures" / "nih-original-1024").glob("*.png"))[0],
    ]
    for path in films:
        r = client.post("/v1/predict?preview=true", files=upload(path.read_bytes(), path.name))
        assert r.status_code == 200, (path.name, r.text)
        rec = r.json()
        assert rec["path"] == path.name
        assert rec["probabilities"] == pytest.approx(
            predictor.predict(path)["probabilities"], abs=1e-6
        )
        assert decode_png(rec["preview"]).shape == (SIZE, SIZE)


def test_non_image_dicom_is_422_with_its_reason(client: TestClient, tmp_path: Path) -> None:
    """The real-file test below on a DICOM built here: a header without pixel data."""
    r = client.post("/v1/predict", files=upload(dicom_without_pixels(tmp_path), "sr.dcm"))
    assert "without pixel data" in assert_error(r, 422, "not_an_image")["message"]


@pytest.mark.data
def test_real_non_image_dicom_is_422_with_its_reason(client: TestClient, shared_data: Path) -> None:
    """A DICOM without pixel data (a pydicom-data structured report) is refused with a reason."""
    pool = sorted((shared_data / "fixtures" / "pydicom-data").rglob("*.dcm"))
    import pydicom

    no_pixels = next(
        p
        for p in pool
        if "PixelData" not in pydicom.dcmread(p, stop_before_pixels=False, force=True)
    )
    body = assert_error(
        client.post("/v1/predict", files=upload(no_pixels.read_bytes(), no_pixels.name)),
        422,
        "not_an_image",
    )
    assert "without pixel data" in body["message"]


def test_heatmaps_on_a_model_without_a_cam_layer_is_422_cannot_predict(run: Path) -> None:
    p = Predictor.from_run(run, batch_size=1)
    p.model.spec = type(p.model.spec)(**{**p.model.spec.__dict__, "cam_layer": ""})
    with TestClient(app_for(run, p)) as c:
        assert c.post("/v1/predict", files=upload(encode(film()))).status_code == 200
        body = assert_error(
            c.post("/v1/predict?heatmaps=true", files=upload(encode(film()))), 422, "cannot_predict"
        )
        assert "Grad-CAM" in body["message"]


def test_error_codes_come_from_the_reader_not_from_message_text() -> None:
    from cxrad.errors import DecodeError, ImageReadError, ModelError
    from cxrad.serve.engine import error_code

    assert error_code(ImageReadError("truncated", "truncated image: x.png")) == "truncated"
    assert error_code(DecodeError("truncated image, said differently")) == "unreadable"
    assert error_code(ModelError("no Grad-CAM layer")) == "cannot_predict"
