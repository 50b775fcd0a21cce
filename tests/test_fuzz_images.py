"""Fuzz: byte-mutated PNG, JPEG and DICOM files end as pixels or a typed failure, never a raw
exception, through the reader, ingest hashing and the preprocess cache (no row lost).

The default run mutates a few hundred files; ``-m slow`` runs thousands (see BENCHMARKS.md).
"""

from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cxrad.errors import ImageReadError
from cxrad.image import read_image
from cxrad.manifest import make_rows, write_manifest
from cxrad.manifest.hashing import hash_file
from cxrad.preprocess import PreprocessConfig, open_cache, preprocess_work
from fuzzing import FUZZ_MAX_PIXELS, base_files, mutated

FORMATS = ("png", "jpeg", "dicom")


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[bytes]]:
    return base_files(tmp_path_factory.mktemp("bases"))


def check_reader(bases: dict[str, list[bytes]], fmt: str, seeds: range) -> Counter[str]:
    """Read every mutated file; return outcome counts; raise on any untyped exception."""
    outcomes: Counter[str] = Counter()
    escaped = []
    for seed in seeds:
        data = mutated(bases, fmt, seed)
        try:
            r = read_image(data, FUZZ_MAX_PIXELS, name=f"{fmt}-{seed}")
        except ImageReadError as e:
            assert e.code and str(e), seed
            outcomes[e.code] += 1
            continue
        except Exception:
            escaped.append((seed, traceback.format_exc(limit=3)))
            continue
        px = r.pixels
        assert px.ndim == 2 and px.dtype == np.float32 and px.size, seed
        assert np.isfinite(px).all() and px.min() >= 0.0 and px.max() <= 1.0, seed
        outcomes["ok"] += 1
    assert not escaped, (
        f"{len(escaped)} raw exceptions, first: seed {escaped[0][0]}\n{escaped[0][1]}"
    )
    return outcomes


def assert_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    """Nothing on stderr that reads as a crash: no Python traceback, no Rust panic."""
    err = capfd.readouterr().err
    assert "Traceback" not in err and "panicked" not in err, err[:2000]


@pytest.mark.parametrize("fmt", FORMATS)
def test_reader_never_raises_raw(
    bases: dict[str, list[bytes]], fmt: str, capfd: pytest.CaptureFixture[str]
) -> None:
    out = check_reader(bases, fmt, range(120))
    assert_quiet(capfd)
    assert sum(out.values()) == 120
    assert out["ok"] > 0 and sum(v for k, v in out.items() if k != "ok") > 0  # both happen


def test_hashing_and_preprocess_keep_every_row(
    bases: dict[str, list[bytes]], tmp_path: Path
) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    recs = []
    for fmt in FORMATS:
        for seed in range(1000, 1040):
            suffix = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}[fmt]
            p = folder / f"{fmt}{seed}{suffix}"
            p.write_bytes(mutated(bases, fmt, seed))
            _, phash, status, fine = hash_file(str(p))
            assert status == "ok" or status.startswith("unreadable: "), (p, status)
            assert (phash is not None) == (status == "ok") == (fine is not None)
            recs.append({"image_id": f"f/{p.name}", "path": str(p), "status": "ok"})
    work = tmp_path / "work"
    write_manifest(make_rows(recs), work)
    s = preprocess_work(work, PreprocessConfig(size=16), workers=1, max_pixels=FUZZ_MAX_PIXELS)
    cache = open_cache(work, PreprocessConfig(size=16))
    cached = set(cache.index["sha1"])
    assert s.n_rows == len(recs) == 120
    assert s.n_failed + s.n_images <= len(recs)
    df = cache.failures
    assert s.n_failed == len(df) and df["reason"].str.len().min() > 0
    # every row is cached or a failure: none lost (two mutations may give identical bytes)
    from cxrad.image import file_sha1

    for r in recs:
        sha = file_sha1(r["path"])
        assert sha in cached or r["image_id"] in set(df["image_id"]), r


@pytest.mark.slow
def test_slow_fuzz_many_mutations(
    bases: dict[str, list[bytes]], capfd: pytest.CaptureFixture[str]
) -> None:
    total: Counter[str] = Counter()
    for fmt in FORMATS:
        out = check_reader(bases, fmt, range(10_000, 13_000))
        total.update({f"{fmt}:{k}": v for k, v in out.items()})
        assert_quiet(capfd)
    assert sum(total.values()) == 9000
    with capfd.disabled():
        print(dict(sorted(total.items())))  # recorded in BENCHMARKS.md
