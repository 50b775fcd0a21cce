"""Serve stage: the web page in a real headless Chromium (Debian's), against a live uvicorn.

Runs in the default suite when ``/usr/bin/chromium`` (or ``$CXRAD_CHROMIUM``) exists and skips
with the reason otherwise. Playwright's own browser download is not used.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np
import pytest

from cxrad.serve import ServeSettings
from helpers import make_dicom
from serve_support import encode, film, live_server

CHROMIUM = Path(os.environ.get("CXRAD_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[1] / "work" / "screenshots"  # git-ignored

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install chromium` (or set CXRAD_CHROMIUM)",
)


@pytest.fixture(scope="module")
def server():
    from conftest import SHARED_DATA

    # Real films pass the input gate; without ../shared/data the synthetic stand-ins would not.
    gate = SHARED_DATA.is_dir()
    with live_server(ServeSettings(model="default", concurrency=2, queue=4, gate=gate)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def flagged_film(tmp_path: Path) -> Path:
    """A film the default model flags with a finding (so it has a heatmap to toggle).

    The first such film among the real pediatric PNEUMONIA test films when ../shared/data is
    there, else among synthetic ones.
    """
    from conftest import SHARED_DATA
    from cxrad.predict import Predictor

    folder = SHARED_DATA / "kaggle-pediatric-pneumonia" / "chest_xray" / "test" / "PNEUMONIA"
    candidates = sorted(folder.glob("*.jpeg"))[:10] if folder.is_dir() else []
    if not candidates:
        for seed in range(10):
            path = tmp_path / f"synthetic{seed}.png"
            path.write_bytes(encode(film("PNEUMONIA", seed=seed, side=256)))
            candidates.append(path)
    predictor = Predictor.from_run("default", gate=SHARED_DATA.is_dir())  # as the server does
    for path in candidates:
        rec = predictor.predict(path)
        if rec["status"] == "ok" and set(rec["positive"]) - {"NORMAL"}:
            return path
    raise AssertionError(f"the default model flags none of {len(candidates)} pneumonia films")


def test_page_uploads_a_film_shows_findings_toggles_an_overlay_and_explains_a_rejection(
    server: str, browser, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(server + "/")
    page.wait_for_selector("#model-name:has-text('cxr-fast')")
    assert "not for diagnosis" in page.inner_text("header").lower()

    # Keyboard: the first Tab stop is the file chooser, and it has a label.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "file"
    assert page.get_attribute("#result", "aria-live") == "polite"

    page.set_input_files("#file", str(flagged_film(tmp_path)))
    page.wait_for_selector("#findings li", timeout=60_000)
    triage = page.inner_text("#triage")
    assert triage.startswith("Triage:") and "abnormality score" in triage
    rows = page.query_selector_all("#findings li")
    assert len(rows) == 17  # every class of the default model, sorted by probability
    probs = [float(r.query_selector(".prob").inner_text().rstrip("%")) for r in rows]
    assert probs == sorted(probs, reverse=True)
    assert len(page.query_selector_all("#findings .threshold")) == 17
    assert page.is_visible("#film")

    toggles = page.query_selector_all("button.toggle")
    assert toggles, "a positive finding should offer its heatmap"
    assert not page.is_visible("#overlay")
    toggles[0].focus()
    page.keyboard.press("Enter")  # keyboard toggles the overlay on...
    assert page.is_visible("#overlay")
    assert toggles[0].get_attribute("aria-pressed") == "true"
    page.fill("#opacity", "40")
    page.dispatch_event("#opacity", "input")
    assert page.evaluate("getComputedStyle(document.getElementById('overlay')).opacity") == "0.4"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "serve-result.png"), full_page=True)
    toggles[0].click()  # ...and off
    assert not page.is_visible("#overlay")

    bad = tmp_path / "notes.png"
    bad.write_text("this is not an X-ray\n")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#message.error")
    message = page.inner_text("#message")
    assert "not an image" in message and "(not_an_image)" in message
    assert not page.is_visible("#findings-box")
    page.screenshot(path=str(SHOTS / "serve-rejected.png"), full_page=True)

    # A DICOM dropped on the page: the browser cannot show DICOM, the server's preview stands in.
    # A real chest CR when ../shared/data is there (the gate passes it); else a synthetic one.
    from conftest import SHARED_DATA

    real = SHARED_DATA / "fixtures" / "xrv-tests"
    real_dcm = sorted(real.glob("1.2.276*.dcm")) if real.is_dir() else []
    dcm = tmp_path / "dropped.dcm"
    if real_dcm:
        dcm.write_bytes(real_dcm[0].read_bytes())
    else:
        pixels = (film("EFFUSION", seed=5, side=200).astype(np.uint16) * 16).astype(np.uint16)
        make_dicom(dcm, pixels, bits_stored=12)
    transfer = page.evaluate_handle(
        """(b64) => {
            const dt = new DataTransfer();
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], "dropped.dcm", { type: "application/dicom" }));
            return dt;
        }""",
        base64.b64encode(dcm.read_bytes()).decode(),
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#message:has-text('Done: dropped.dcm')", timeout=60_000)
    assert page.get_attribute("#film", "src").startswith("data:image/png;base64,")
    assert page.is_visible("#film") and page.is_visible("#triage")
    assert len(page.query_selector_all("#findings li")) == 17

    # Nothing was fetched from anywhere but this server.
    assert requested and all(u.startswith(server) or u.startswith("data:") for u in requested)
    page.close()
