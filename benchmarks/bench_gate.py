"""Stage 5, gate benchmark: how often the shipped input gate rejects each kind of input, test parts only.

Every number is measured on parts that played no role in training or in picking the
threshold (``scripts/gate_data.py`` assigns them; ``scripts/train_gate.py`` reads only train
and val):

- frontal chest films: the ``test`` split of every source in the cxrad manifest (wrong
  rejections, with a Wilson 95 % CI and a patient-bootstrap CI), UNIFESP test-patient chest films
  labelled frontal, and COVID-CXNet (never used at all: an unseen source);
- lateral views: UNIFESP test-patient chest films labelled lateral, ieee8023 test-patient laterals;
- other body parts: UNIFESP test-patient non-chest films;
- CT: ieee8023 test-patient CT rows (pixels only, no tags); CT/MR/US/NM/SEG: every pydicom-data
  file, through the DICOM tags;
- non-radiographs: scikit-image photos kept out of training, and documents, screenshots and
  charts drawn with other seeds and other fonts;
- inverted and rotated (90/180/270°) versions of the manifest's test frontal films.

Each input goes through ``InputGate.check_file`` (tags, rules, classifier) as ``cxrad predict``
does; synthetic and transformed images through ``InputGate.check``.

Example:
    cxrad ingest ../shared/data --out work/full && cxrad split work/full --keep-official
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_gate.py --work work/full
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import gate_data

from cxrad.gate import GateClassifier, InputGate
from cxrad.gate.tags import read_info

EXPECTED = {
    "frontal": None,
    "lateral": "lateral_view",
    "not_chest": "not_chest",
    "ct": "not_xray_modality",
    "dicom_other_modality": "not_xray_modality",
    "not_radiograph": "not_radiograph",
    "inverted": "inverted",
    "rotated": "rotated",
}


def wilson(k: int, n: int, z: float = 1.96) -> list[float] | None:
    """Wilson score 95 % interval of a proportion k/n."""
    if n == 0:
        return None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, float(c - h)), 4), round(min(1.0, float(c + h)), 4)]


def patient_bootstrap(
    rejected: np.ndarray, patients: list, n_boot: int = 2000, seed: int = 0
) -> list[float]:
    """Percentile 95 % CI of the rejection rate, resampling patients (unknown = own cluster)."""
    keys = [p if p is not None else f"_img{i}" for i, p in enumerate(patients)]
    ids = {k: j for j, k in enumerate(dict.fromkeys(keys))}
    cl = np.array([ids[k] for k in keys])
    k = np.bincount(cl, weights=rejected.astype(float))
    n = np.bincount(cl)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(n), (n_boot, len(n)))
    rates = k[draws].sum(1) / n[draws].sum(1)
    return [round(float(np.quantile(rates, 0.025)), 4), round(float(np.quantile(rates, 0.975)), 4)]


def invert(a: np.ndarray) -> np.ndarray:
    return 255 - a if a.dtype == np.uint8 else (1.0 - a).astype(np.float32)


def cxnet_items() -> list[dict]:
    root = gate_data.SHARED / "covid-cxnet"
    with open(root / "metadata.csv", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    return [
        {
            "path": str(root / "chest_xray_images" / "covid19" / r["filename"]),
            "label": "frontal",
            "split": "test",
            "source": "covid-cxnet",
            "kind": "frontal",
            "patient": "cxnet:" + r["patient_id"],
        }
        for r in rows
        if (root / "chest_xray_images" / "covid19" / r["filename"]).is_file()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("work/full"))
    ap.add_argument("--n-synthetic", type=int, default=400)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/gate.json"))
    ap.add_argument(
        "--gate-dir", type=Path, default=None, help="a gate model other than the shipped one"
    )
    ap.add_argument(
        "--limit", type=int, default=None, help="every n-th test file only (a quick look)"
    )
    args = ap.parse_args()
    gate = InputGate(GateClassifier.load(args.gate_dir)) if args.gate_dir else InputGate.default()
    t0 = time.time()
    rows: list[dict] = []  # group, source, patient, passed, code, by

    def add(group: str, source: str, patient, verdict) -> None:
        rows.append(
            {
                "group": group,
                "source": source,
                "patient": patient,
                "passed": verdict.passed,
                "code": verdict.code,
                "by": verdict.by,
            }
        )

    test = [
        it
        for it in gate_data.manifest_items(args.work) + gate_data.unifesp_items()
        if it["split"] == "test"
    ]
    test += cxnet_items()
    if args.limit:
        test = test[:: args.limit]
    seconds = []
    for i, it in enumerate(test):
        if it["label"] == "chest_any":
            continue  # view unknown: neither a frontal nor a lateral example
        group = it["kind"] if it["kind"] == "ct" else it["label"]
        source = it["source"]
        s = time.perf_counter()
        verdict, pixels = gate.check_file(it["path"])
        seconds.append(time.perf_counter() - s)
        add(group, source, it["patient"], verdict)
        if (
            it["label"] == "frontal"
            and source not in ("unifesp", "covid-cxnet")
            and pixels is not None
        ):
            info = read_info(it["path"])
            add("inverted", source, it["patient"], gate.check(invert(pixels), info))
            add("rotated", source, it["patient"], gate.check(np.rot90(pixels, 1 + i % 3), info))
        if i % 500 == 0:
            print(f"{i}/{len(test)} ({time.time() - t0:.0f} s)", file=sys.stderr)
    for p in sorted((gate_data.SHARED / "fixtures" / "pydicom-data").glob("*.dcm")):
        info = read_info(p)
        if (info.get("Modality") or "") in ("CT", "MR", "US", "NM", "PT", "SEG"):
            try:
                verdict, _ = gate.check_file(p)
            except Exception as e:  # an undecodable file the tags did not catch
                print(f"{p.name}: {e}", file=sys.stderr)
                continue
            add("dicom_other_modality", "pydicom-data:" + info["Modality"], p.stem, verdict)
    for it in gate_data.synthetic_items("test", args.n_synthetic, seed=12345):
        add("not_radiograph", "synthetic:" + it["kind"], None, gate.check(it["pixels"], {}))

    report = summarise(rows)
    report["median_ms_per_file"] = round(1000 * float(np.median(seconds)), 2)
    report["gate_config"] = {
        k: gate.classifier.config[k] for k in ("name", "reject_threshold", "threshold_rule")
    }
    report["seconds"] = round(time.time() - t0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))


def summarise(rows: list[dict]) -> dict:
    out: dict = {"groups": {}, "by_source": {}}
    by_group = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    for g, rs in by_group.items():
        rej = np.array([not r["passed"] for r in rs])
        right = sum(r["code"] == EXPECTED[g] for r in rs if not r["passed"])
        entry = {
            "n": len(rs),
            "rejected": int(rej.sum()),
            "rate": round(float(rej.mean()), 4),
            "wilson95": wilson(int(rej.sum()), len(rs)),
            "right_reason": right if EXPECTED[g] else None,
            "codes": dict(Counter(r["code"] for r in rs if not r["passed"])),
            "by": dict(Counter(r["by"] for r in rs)),
        }
        if g == "frontal":
            entry["patient_bootstrap95"] = patient_bootstrap(rej, [r["patient"] for r in rs])
        out["groups"][g] = entry
        for src in sorted({r["source"] for r in rs}):
            sub = [r for r in rs if r["source"] == src]
            k = sum(not r["passed"] for r in sub)
            out["by_source"][f"{g} / {src}"] = {
                "n": len(sub),
                "rejected": k,
                "rate": round(k / len(sub), 4),
                "wilson95": wilson(k, len(sub)),
            }
    return out


def markdown(report: dict) -> str:
    lines = [
        "| inputs (test parts) | n | rejected | 95 % CI (Wilson) | right reason | codes |",
        "|---|---|---|---|---|---|",
    ]
    for g, e in report["groups"].items():
        ci = e["wilson95"]
        rr = "" if e["right_reason"] is None else f"{e['right_reason']}/{e['rejected']}"
        lines.append(
            f"| {g} | {e['n']} | {100 * e['rate']:.2f} % | {100 * ci[0]:.2f}-{100 * ci[1]:.2f} % | {rr} | {e['codes']} |"
        )
    lines += ["", "| group / source | n | rejected | 95 % CI |", "|---|---|---|---|"]
    for k, e in report["by_source"].items():
        ci = e["wilson95"]
        lines.append(
            f"| {k} | {e['n']} | {100 * e['rate']:.2f} % | {100 * ci[0]:.2f}-{100 * ci[1]:.2f} % |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
