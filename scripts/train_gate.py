"""Train the input gate's classifier and write it to ``src/cxrad/assets/gate/``.

    cxrad ingest ../shared/data --out work/full && cxrad split work/full --keep-official
    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/train_gate.py --work work/full

Only the train and val parts of every source are read (see ``scripts/gate_data.py``): train
fits the weights, val picks ``reject_threshold`` (the 99.5th percentile of the val frontal
films' scores, so about 0.5 % of val frontal films are rejected). Test parts are for
``benchmarks/bench_gate.py``. About 10 minutes on a busy 2-core machine (1500 steps of 64).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gate_data

from cxrad.gate.net import GATE_CLASSES, GateNet
from cxrad.preprocess.decode import decode_native
from cxrad.preprocess.transform import resize

log = logging.getLogger("train_gate")
REPO = Path(__file__).resolve().parents[1]
IDX = {c: i for i, c in enumerate(GATE_CLASSES)}
ALLOWED = {c: (c,) for c in GATE_CLASSES} | {"chest_any": ("frontal", "lateral")}
# Sampling weight of each group in a batch (group = label, plus the two synthetic kinds).
GROUP_WEIGHT = {
    "frontal": 3.0,
    "lateral": 1.5,
    "chest_any": 0.3,
    "not_chest": 1.5,
    "not_radiograph": 1.0,
    "other_modality": 0.7,
    "inverted": 1.0,
    "rotated": 1.0,
}


def invert(a: np.ndarray) -> np.ndarray:
    return 255 - a if a.dtype == np.uint8 else (1.0 - a).astype(np.float32)


def load(items: list[dict], size: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """64 px letterboxed images (as the gate sees them) and their inverted twins."""
    xs, inv, kept = [], [], []
    for i, it in enumerate(items):
        try:
            a = it["pixels"] if "pixels" in it else decode_native(it["path"])
        except Exception as e:  # counted, never silent
            log.warning("skip %s: %s", it.get("path"), e)
            continue
        if a.ndim != 2 or min(a.shape) < 8:
            continue
        xs.append(resize(a, size, "letterbox"))
        inv.append(resize(invert(a), size, "letterbox") if it["label"] == "frontal" else xs[-1])
        kept.append(it)
        if i % 1000 == 0:
            log.info("decoded %d/%d", i, len(items))
    return np.stack(xs), np.stack(inv), kept


def expand(items: list[dict], x: np.ndarray, xi: np.ndarray, rng: np.random.Generator, synth: bool):
    """(images, allowed-class masks, groups): frontal films also appear inverted and rotated."""
    imgs, masks, groups = [], [], []
    for k, it in enumerate(items):
        variants = [("orig", it["label"])]
        if synth and it["label"] == "frontal":
            variants += [("inv", "inverted"), ("rot", "rotated")]
        for how, group in variants:
            img = xi[k] if how == "inv" else x[k]
            if how == "rot":
                img = np.rot90(img, int(rng.integers(1, 4)))
            m = np.zeros(len(GATE_CLASSES), np.float32)
            for c in ALLOWED[group]:
                m[IDX[c]] = 1
            imgs.append(np.ascontiguousarray(img))
            masks.append(m)
            groups.append(group)
    return np.stack(imgs), np.stack(masks), groups


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Small affine jitter, mirror, contrast and gamma; black fill like letterbox padding."""
    b = x.shape[0]
    ang = (torch.rand(b, generator=g) - 0.5) * 2 * np.deg2rad(8)
    sc = 1 + (torch.rand(b, generator=g) - 0.5) * 0.2
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    t = (torch.rand(b, 2, generator=g) - 0.5) * 0.12
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, t[:, 0]], 1), torch.stack([sin * flip, cos, t[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    gamma = torch.exp((torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.6)
    x = x.clamp(0, 1) ** gamma
    c = 1 + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.4
    return ((x - 0.5) * c + 0.5).clamp(0, 1)


def partial_label_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-log of the total probability of the allowed classes (one class = cross-entropy)."""
    logp = F.log_softmax(logits, 1)
    return -(torch.logsumexp(logp + torch.log(mask.clamp_min(1e-12)), 1)).mean()


@torch.no_grad()
def predict(net: GateNet, x: np.ndarray) -> np.ndarray:
    net.eval()
    out = [
        torch.softmax(net(torch.from_numpy(x[i : i + 512]).float()[:, None] / 255), 1)
        for i in range(0, len(x), 512)
    ]
    return torch.cat(out).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=REPO / "work" / "full")
    ap.add_argument("--out", type=Path, default=REPO / "src" / "cxrad" / "assets" / "gate")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--cap", type=int, default=700, help="frontal train films per source")
    ap.add_argument("--n-synthetic", type=int, default=1200)
    ap.add_argument(
        "--frr", type=float, default=0.005, help="val frontal rejection the threshold allows"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()

    items = [it for it in gate_data.all_items(args.work) if it["split"] in ("train", "val")]
    train = [it for it in items if it["split"] == "train"]
    # Cap the frontal films per source so that no one source dominates "frontal".
    by_src: dict[str, list[dict]] = {}
    for it in train:
        if it["label"] == "frontal" and it["source"] != "unifesp":
            by_src.setdefault(it["source"], []).append(it)
    drop = set()
    for lst in by_src.values():
        if len(lst) > args.cap:
            keep = set(rng.choice(len(lst), args.cap, replace=False).tolist())
            drop |= {id(it) for j, it in enumerate(lst) if j not in keep}
    train = [it for it in train if id(it) not in drop] + gate_data.synthetic_items(
        "train", args.n_synthetic, args.seed
    )
    val = [it for it in items if it["split"] == "val"] + gate_data.synthetic_items(
        "val", 300, args.seed
    )
    log.info("train %s", Counter(it["label"] for it in train))
    log.info("val %s", Counter(it["label"] for it in val))

    xt, xti, train = load(train, args.size)
    xv, xvi, val = load(val, args.size)
    Xt, Mt, Gt = expand(train, xt, xti, rng, synth=True)
    Xv, _, Gv = expand(val, xv, xvi, np.random.default_rng(args.seed + 1), synth=True)
    log.info("decoded in %.0f s; train %d, val %d images", time.time() - t0, len(Xt), len(Xv))

    counts = Counter(Gt)
    w = np.array([GROUP_WEIGHT[g] / counts[g] for g in Gt])
    w /= w.sum()
    net = GateNet(len(GATE_CLASSES))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=args.steps, pct_start=0.1
    )
    g = torch.Generator().manual_seed(args.seed)
    Xt_t, Mt_t = torch.from_numpy(Xt), torch.from_numpy(Mt)
    for step in range(args.steps):
        net.train()
        idx = torch.from_numpy(rng.choice(len(Xt), args.batch, p=w))
        x = augment(Xt_t[idx].float()[:, None] / 255, g)
        loss = partial_label_loss(net(x), Mt_t[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps - 1:
            log.info("step %d loss %.4f (%.0f s)", step, loss.item(), time.time() - t0)

    pv = predict(net, Xv)
    score = 1 - pv[:, 0]
    gv = np.array(Gv)
    frontal = gv == "frontal"
    thr = float(np.quantile(score[frontal], 1 - args.frr))
    val_metrics = {}
    for grp in sorted(set(Gv)):
        s = score[gv == grp]
        rate = float((s >= thr).mean())
        val_metrics[grp] = {"n": len(s), "rejected": round(rate, 4)}
    log.info("threshold %.4f; val %s", thr, json.dumps(val_metrics))

    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        str(args.out / "model.safetensors"),
    )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO
        ).stdout.strip()
    except OSError:
        commit = None
    config = {
        "name": "gate-cnn-64",
        "classes": list(GATE_CLASSES),
        "size": args.size,
        "mode": "letterbox",
        "widths": [16, 32, 64, 128],
        "reject_threshold": round(thr, 6),
        "threshold_rule": f"99.5th percentile of val frontal scores (target val FRR {args.frr})",
        "val_metrics": val_metrics,
        "train_counts": dict(Counter(Gt)),
        "train": {k: str(v) for k, v in vars(args).items()},
        "git_commit": commit,
        "seconds": round(time.time() - t0),
    }
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    log.info("wrote %s in %.0f s", args.out, time.time() - t0)


if __name__ == "__main__":
    main()
