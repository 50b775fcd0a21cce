"""Serve stage: Schemathesis fuzzes every operation in the OpenAPI schema; none may answer 5xx."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from cxrad.predict import Predictor
from cxrad.serve import ServeSettings, create_app
from cxrad.serve.engine import ModelService
from serve_support import make_run

schemathesis = pytest.importorskip("schemathesis")

_RUN = Path(tempfile.mkdtemp(prefix="cxrad-fuzz-run-"))
atexit.register(shutil.rmtree, _RUN, ignore_errors=True)
SEEN: Counter[tuple[str, str, int]] = Counter()


def _app():
    run = make_run(_RUN)
    s = ServeSettings(model=str(run), max_upload_bytes=256 * 1024, timeout_s=20.0, gate=False)
    app = create_app(s)
    # The ASGI transport does not run the lifespan; load the model as the lifespan would.
    app.state.service = ModelService(Predictor.from_run(run, batch_size=1), s)
    return app


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_operation_answers_5xx(case) -> None:
    response = case.call()
    SEEN[(case.method, case.path, response.status_code)] += 1
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"code", "message"}, body


def test_the_fuzzer_reached_the_model() -> None:
    """Runs after the fuzz test: it must have got past validation to a real prediction."""
    assert SEEN[("POST", "/v1/predict", 422)] > 0, SEEN
    assert SEEN[("GET", "/v1/model", 200)] > 0, SEEN
