"""Scale benchmark: ingest, split, preprocess and the evaluation bootstrap at 2k-128k films.

A synthetic NIH ChestX-ray14 tree (``images/*.png`` + ``Data_Entry_2017_v2020.csv``) is built
from the real NIH films in ``../shared/data``: each film blends random crops of two real films
(different weights, gamma and noise), so films are distinct but crowd together in hash space
as real X-rays do; a known fraction are near-duplicate copies (downscaled and re-noised) of an
earlier film, with their own file and sha1. Labels and views come from the dominant real film;
patients hold about three films each. Trees are written under ``--root`` (default
``/tmp/f-scale/scale``; never commit them) at 96 px.

Each stage runs as its own process (``cxrad ingest``, ``cxrad split``, ``cxrad preprocess``
under ``ulimit -n 256``, and ``classification_metrics`` over ``n`` synthetic test films with
patient clusters); CPU time (user + system, children included), wall time and peak RSS come
from ``os.wait4`` in a small launcher process (see ``LAUNCHER``). The growth exponent ``k`` (time ~ n^k) is the least-squares slope of
log-log over the sizes >= 8k, and the table (with extrapolations to 149k and 1M films) goes
into BENCHMARKS.md between markers. At the largest size <= 32k the faiss near-duplicate search
is compared with the exhaustive reference, and a 1% manifest change is preprocessed to
measure how much of the cache it rewrites.

Example:
    PYTHONPATH=src .venv/bin/python benchmarks/bench_scale.py --sizes 2000 8000 32000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data" / "nih-chestxray14"
SIDE = 96
DUP_FRACTION = 0.05
STAGES = ("ingest", "split", "preprocess", "bootstrap")
TABLE_STAGES = (*STAGES, "bootstrap_old")
MARK_START, MARK_END = "<!-- bench_scale:start -->", "<!-- bench_scale:end -->"


def base_films(cache: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """The real NIH films at 128 px (cached as .npy) and their label rows."""
    table = pd.read_csv(DATA / "Data_Entry_2017_v2020.csv.gz")
    names = sorted(p.name for p in (DATA / "images").glob("*.png"))
    table = table.drop_duplicates("Image Index").set_index("Image Index").loc[names]
    if cache.is_file():
        return np.load(cache), table.reset_index()
    films = np.stack(
        [
            np.asarray(Image.open(DATA / "images" / n).convert("L").resize((128, 128)), np.uint8)
            for n in names
        ]
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, films)
    return films, table.reset_index()


def _crop(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    c = int(rng.integers(96, 129))
    y, x = rng.integers(0, 129 - c, 2)
    crop = Image.fromarray(film[y : y + c, x : x + c]).resize((SIDE, SIDE))
    return np.asarray(crop, np.float32)


def _film(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A distinct synthetic film: crops of two real films blended, gamma, noise."""
    a, b = (int(v) for v in rng.integers(0, len(base), 2))
    w = rng.uniform(0.55, 0.8)
    out = w * _crop(base[a], rng) + (1 - w) * _crop(base[b], rng)
    out = 255 * (out / 255) ** rng.uniform(0.8, 1.25) + rng.normal(0, 3, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8), a


def _name(i: int) -> str:
    return f"{1 + i // 3:08d}_{i % 3:03d}.png"


def make_tree(root: Path, n: int, base: np.ndarray, table: pd.DataFrame, seed: int = 0) -> Path:
    """Write ``n`` films in the NIH layout under ``root``; returns the truth table path."""
    truth = root / "truth.csv"
    if truth.is_file():
        return truth
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, dups, films = [], [], {}
    for i in range(n):
        pid, visit, name = 1 + i // 3, i % 3, _name(i)
        if i > 10 and rng.random() < DUP_FRACTION:
            j = int(rng.integers(0, i))
            src, a = films[j]
            small = Image.fromarray(src).resize((80, 80)).resize((SIDE, SIDE))
            noisy = np.asarray(small, np.float32) + rng.normal(0, 2, (SIDE, SIDE))
            img = np.clip(noisy, 0, 255).astype(np.uint8)
            dups.append((j, i))
        else:
            img, a = _film(base, rng)
        films[i] = (img, a)
        Image.fromarray(img).save(root / "images" / name, compress_level=1)
        r = table.iloc[a]
        rows.append([name, r["Finding Labels"], visit, pid, r["Patient Age"]])
        rows[-1] += [r["Patient Gender"], r["View Position"], SIDE, SIDE, 0.143, 0.143]
    cols = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age"]
    cols += ["Patient Gender", "View Position", "OriginalImage[Width", "Height]"]
    cols += ["OriginalImagePixelSpacing[x", "y]"]
    with gzip.open(root / "Data_Entry_2017_v2020.csv.gz", "wt") as fh:
        pd.DataFrame(rows, columns=cols).to_csv(fh, index=False)
    pd.DataFrame(dups, columns=["original_row", "copy_row"]).to_csv(truth, index=False)
    return truth


LAUNCHER = """
import json, os, sys
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump([os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime, ru.ru_maxrss], f)
"""
"""Spawns the measured command from a fresh, small interpreter and reports its rusage.

On Linux a forked child's peak RSS starts at its parent's RSS (the copied page counters are
recorded into ``maxrss`` at exec), so measuring a stage forked straight from this benchmark,
which holds the synthetic tree in memory (1.5 GB at 128k), reported this process's RSS instead
of the stage's. Forked from the launcher, the stage's peak is its own.
"""


def run_measured(cmd: list[str], nofile: int | None = None) -> dict[str, float]:
    """Run ``cmd``; CPU seconds (with children), wall seconds and its own peak RSS (MiB)."""

    def limits() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    report = Path(tempfile.mkstemp(suffix=".json")[1])
    t = time.perf_counter()
    launch = [sys.executable, "-c", LAUNCHER, str(report), *cmd]
    proc = subprocess.run(launch, env=env, preexec_fn=limits, stdout=subprocess.PIPE)
    wall = time.perf_counter() - t
    code, cpu, maxrss_kb = json.loads(report.read_text())
    report.unlink()
    if proc.returncode != 0 or code != 0:
        raise RuntimeError(f"{cmd} failed with status {code}: {proc.stdout[-2000:]!r}")
    return {
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "rss_mb": round(maxrss_kb / 1024, 1),
        "stdout": proc.stdout.decode(errors="replace")[-4000:],
    }


BOOTSTRAP = """
import sys, numpy as np
from cxrad.evaluate.metrics import classification_metrics
n, n_boot = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
c = 14
y = (rng.random((n, c)) < rng.uniform(0.01, 0.2, c)).astype(float)
p = rng.random((n, c)) + 0.5 * y
clusters = np.arange(n) // 3
m = classification_metrics(y, p, [f"c{k}" for k in range(c)], clusters, n_boot=n_boot, seed=0)
print(m["macro"]["auroc"], m["macro"]["auroc_ci"])
"""


BOOTSTRAP_OLD = """
import sys, numpy as np
sys.path.insert(0, sys.argv[3])
from bootstrap_reference import bootstrap_metric, percentile_ci, resample_counts
n, n_boot = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
c = 14
y = (rng.random((n, c)) < rng.uniform(0.01, 0.2, c)).astype(float)
p = rng.random((n, c)) + 0.5 * y
clusters = np.arange(n) // 3
counts = resample_counts(int(clusters.max()) + 1, n_boot, 0)
cis = [percentile_ci(bootstrap_metric(m, p[:, j], y[:, j], clusters, counts))
       for j in range(c) for m in ("auroc", "auprc")]
print(cis[0])
"""


def bootstrap_pair(n: int, n_boot: int) -> dict[str, dict]:
    """The new bootstrap (all 14 classes, AUROC + AUPRC + micro) and the old one, same data."""
    new = run_measured([sys.executable, "-c", BOOTSTRAP, str(n), str(n_boot)])
    old = run_measured([sys.executable, "-c", BOOTSTRAP_OLD, str(n), str(n_boot), str(HERE)])
    return {"bootstrap": new, "bootstrap_old": old}


def cxrad(*args: str) -> list[str]:
    return [sys.executable, "-m", "cxrad", *args]


def measure_size(root: Path, n: int, base: np.ndarray, table: pd.DataFrame, a: argparse.Namespace):
    """Every requested stage at one size; returns ``{stage: measurement}``."""
    tree, work = root / f"tree-{n}", root / f"work-{n}"
    t = time.perf_counter()
    make_tree(tree, n, base, table)
    print(f"[{n}] tree ready ({time.perf_counter() - t:.0f} s)", flush=True)
    res: dict[str, dict] = {}
    if "ingest" in a.stages:
        shutil.rmtree(work, ignore_errors=True)
        res["ingest"] = run_measured(
            cxrad("ingest", str(tree), "--out", str(work), "--workers", "1")
        )
    if "split" in a.stages:
        res["split"] = run_measured(cxrad("split", str(work), "--workers", "1"))
    if "preprocess" in a.stages:
        shutil.rmtree(work / "cache", ignore_errors=True)
        cmd = cxrad("preprocess", str(work), "--size", str(SIDE), "--workers", "1", "--no-progress")
        res["preprocess"] = run_measured(cmd, nofile=256)
    if "bootstrap" in a.stages:
        cmd = [sys.executable, "-c", BOOTSTRAP, str(n), str(a.n_boot)]
        res["bootstrap"] = run_measured(cmd)
    for k, v in res.items():
        print(f"[{n}] {k}: {v['cpu_s']} s CPU, {v['wall_s']} s wall, {v['rss_mb']} MiB", flush=True)
    return res


def preprocess_copies(src: Path, n: int, root: Path) -> dict:
    """``cxrad preprocess`` (``ulimit -n 256``) of ``n`` films copied from the PNGs in ``src``.

    Each copy gets distinct trailing bytes (decoders ignore them), so a distinct sha1; the
    manifest is written directly (no ingest), so this measures preprocess alone at sizes whose
    full synthetic tree would take too long to generate on a small machine.
    """
    import hashlib

    sys.path.insert(0, str(REPO / "src"))
    from cxrad.manifest import make_rows, write_manifest

    files = sorted(src.glob("*.png"))
    tree, work = root / f"copies-{n}", root / f"copies-work-{n}"
    shutil.rmtree(work, ignore_errors=True)
    (tree).mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        data = files[i % len(files)].read_bytes() + i.to_bytes(8, "little")
        p = tree / f"{i:07d}.png"
        if not p.is_file():
            p.write_bytes(data)
        recs.append(
            {"image_id": f"copies/{i:07d}.png", "path": str(p), "source": "copies",
             "sha1": hashlib.sha1(data).hexdigest(), "status": "ok"}
        )  # fmt: skip
    work.mkdir(parents=True)
    write_manifest(make_rows(recs), work)
    cmd = cxrad("preprocess", str(work), "--size", str(SIDE), "--workers", "1", "--no-progress")
    out = run_measured(cmd, nofile=256)
    out.pop("stdout", None)
    shutil.rmtree(work)
    shutil.rmtree(tree)
    return out


def incremental(root: Path, n: int) -> dict[str, float]:
    """Preprocess 99% of the manifest, then all of it: the share of pack bytes written again."""
    sys.path.insert(0, str(REPO / "src"))
    from cxrad.preprocess import PreprocessConfig, preprocess_work

    src = root / f"work-{n}"
    work = root / f"incr-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    df = pd.read_parquet(src / "manifest.parquet")
    keep = np.random.default_rng(1).random(len(df)) >= 0.01
    df[keep].to_parquet(work / "manifest.parquet")
    cfg = PreprocessConfig(size=SIDE)
    first = preprocess_work(work, cfg, workers=1)
    files = sorted((first.cache_dir / "data").glob("*.u8"))
    before = {p.name: p.stat().st_size for p in files}
    shutil.copy(src / "manifest.parquet", work / "manifest.parquet")
    second = preprocess_work(work, cfg, workers=1)
    after = {p.name: p.stat().st_size for p in (second.cache_dir / "data").glob("*.u8")}
    out = {
        "rows_added": int((~keep).sum()),
        "new_images": second.n_new,
        "bytes_written": second.bytes_written,
        "cache_bytes": second.bytes,
        "share_rewritten": round(second.bytes_written / max(second.bytes, 1), 4),
        "files_unchanged": sum(1 for k, v in before.items() if after.get(k) == v),
        "files": len(after),
    }
    shutil.rmtree(work)
    return out


def dedup_recall(root: Path, n: int) -> dict[str, float]:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(REPO / "src"))
    from dedup_compare import compare

    csv = root / f"dedup_compare_{n}.csv"
    out = compare(root / f"work-{n}", csv)
    truth = pd.read_csv(root / f"tree-{n}" / "truth.csv")
    df = pd.read_parquet(root / f"work-{n}" / "manifest.parquet")
    name = df["image_id"].str.split("/").str[-1]
    group = dict(zip(name, df["dup_group"], strict=True))
    hit = [group[_name(a)] == group[_name(b)] for a, b in truth.itertuples(index=False)]
    out["planted_pairs"] = len(truth)
    out["planted_found"] = int(sum(hit))
    out["csv"] = str(csv)
    return out


def exponent(ns: list[int], ys: list[float]) -> float | None:
    pts = [(x, y) for x, y in zip(ns, ys, strict=True) if x >= 8000 and y > 0]
    if len(pts) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def table(results: dict[int, dict]) -> str:
    ns = sorted(results)
    lines = ["| stage | metric | " + " | ".join(f"{n // 1000}k" for n in ns)]
    lines[0] += " | k (>= 8k) | 149k (extrap.) | 1M (extrap.) |"
    lines.append("|---" * (len(ns) + 5) + "|")
    for stage in TABLE_STAGES:
        for metric, unit in (("cpu_s", "CPU s"), ("wall_s", "wall s"), ("rss_mb", "peak RSS MiB")):
            have = [n for n in ns if stage in results[n]]
            if not have:
                continue
            vals = [results[n][stage][metric] for n in have]
            k = exponent(have, vals)
            cells = [str(results[n][stage][metric]) if stage in results[n] else "-" for n in ns]
            last_n, last = have[-1], vals[-1]
            ext = [
                f"{last * (m / last_n) ** k:.0f}" if k is not None else "-"
                for m in (149_000, 1_000_000)
            ]
            ks = f"{k:.2f}" if k is not None else "-"
            lines.append(
                f"| {stage} | {unit} | " + " | ".join(cells) + f" | {ks} | {ext[0]} | {ext[1]} |"
            )
    return "\n".join(lines)


def write_md(path: Path, body: str) -> None:
    text = path.read_text() if path.is_file() else ""
    block = f"{MARK_START}\n{body}\n{MARK_END}"
    if MARK_START in text:
        a, b = text.index(MARK_START), text.index(MARK_END) + len(MARK_END)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip() + "\n\n## Scale: 2k-128k films (f-scale, issue #17)\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000, 128000])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--root", type=Path, default=Path("/tmp/f-scale/scale"))
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--results", type=Path, default=HERE / "results" / "scale.json")
    ap.add_argument("--md", type=Path, default=None, help="write the table into this markdown")
    ap.add_argument("--keep", action="store_true", help="keep the trees and work folders")
    ap.add_argument(
        "--copies-from", type=Path, default=None,
        help="only preprocess --sizes films copied from the PNGs in this folder (no tree)",
    )  # fmt: skip
    ap.add_argument("--bootstrap-only", action="store_true", help="new vs old bootstrap only")
    a = ap.parse_args()
    if a.bootstrap_only:
        res = json.loads(a.results.read_text()) if a.results.is_file() else {}
        for n in a.sizes:
            res[str(n)] = bootstrap_pair(n, a.n_boot)
            for v in res[str(n)].values():
                v.pop("stdout", None)
            print(f"[{n}] {res[str(n)]}", flush=True)
            a.results.write_text(json.dumps(res, indent=1))
        return
    if a.copies_from:
        res = json.loads(a.results.read_text()) if a.results.is_file() else {}
        for n in a.sizes:
            res[str(n)] = preprocess_copies(a.copies_from, n, a.root)
            print(f"[{n}] preprocess (copies): {res[str(n)]}", flush=True)
            a.results.write_text(json.dumps(res, indent=1))
        return
    a.root.mkdir(parents=True, exist_ok=True)
    base, labels = base_films(a.root / "nih128.npy")
    results = json.loads(a.results.read_text()) if a.results.is_file() else {}
    results = {int(k): v for k, v in results.items()}
    for n in a.sizes:
        res = results.setdefault(n, {})
        res.update(measure_size(a.root, n, base, labels, a))
        if n <= 32000 and {"ingest", "split"} <= set(a.stages):
            res["dedup"] = dedup_recall(a.root, n)
            print(f"[{n}] dedup: {res['dedup']}", flush=True)
        if n <= 32000 and "preprocess" in a.stages:
            res["incremental"] = incremental(a.root, n)
            print(f"[{n}] incremental: {res['incremental']}", flush=True)
        for v in res.values():
            v.pop("stdout", None)
        a.results.parent.mkdir(parents=True, exist_ok=True)
        a.results.write_text(json.dumps({str(k): results[k] for k in sorted(results)}, indent=1))
        if not a.keep:
            shutil.rmtree(a.root / f"tree-{n}", ignore_errors=True)
            shutil.rmtree(a.root / f"work-{n}", ignore_errors=True)
    print(table(results))
    if a.md:
        write_md(a.md, table(results))


if __name__ == "__main__":
    main()
