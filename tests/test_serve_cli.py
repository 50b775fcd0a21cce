"""Serve stage: ``cxrad serve`` options, fail-fast errors and the settings hand-over to workers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import uvicorn

from cxrad.cli import main
from cxrad.serve import ServeSettings
from cxrad.serve.factory import SETTINGS_ENV, app_from_env, dump_settings, load_settings
from serve_support import make_run


def cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["cxrad", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


def test_missing_model_fails_fast_with_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    code, err = cli(["serve", "--model", str(tmp_path / "nope")], monkeypatch, capsys)
    assert code == 2
    assert "is not a cxrad run" in err and "Traceback" not in err


def test_options_and_token_from_the_environment_reach_uvicorn(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    run = make_run(tmp_path / "run")
    seen: dict = {}

    def fake_run(app, **kwargs):  # stands in for uvicorn.run: no socket is opened
        seen.update(kwargs, app=app)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setenv("CXRAD_TOKEN", "from-env")
    args = ["serve", "--model", str(run), "--port", "8123", "--cors-origin", "http://a.example"]
    assert cli(args, monkeypatch, capsys)[0] == 0
    s: ServeSettings = seen["app"].state.settings
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert s.token == "from-env" and s.cors_origins == ("http://a.example",)
    assert s.model == str(run) and s.backend == "torch"


def test_unknown_backend_is_a_one_line_error(tmp_path: Path, monkeypatch, capsys) -> None:
    code, err = cli(["serve", "--backend", "tensorrt"], monkeypatch, capsys)
    assert code == 2 and "unknown --backend 'tensorrt'" in err


def test_workers_get_the_settings_through_the_environment(tmp_path: Path, monkeypatch) -> None:
    s = ServeSettings(model="x", token="t", cors_origins=("http://a",), max_pixels=99)
    assert load_settings(dump_settings(s)) == s
    monkeypatch.setenv(SETTINGS_ENV, dump_settings(s))
    assert app_from_env().state.settings == s


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        ServeSettings(concurrency=0)
    with pytest.raises(ValueError):
        ServeSettings(timeout_s=0)
