"""A reconstruction baseline for the ZhangLab protocol: a variational autoencoder on normal films.

The literature's from-scratch one-class baselines on ZhangLab are reconstruction models (AE,
VAE, f-AnoGAN, GANomaly; the SQUID paper's table). This measures one on this machine, beside
cxrad's CutPaste/PaDiM runs: MONAI's ``VarAutoEncoder`` (dense latent) trained on the
``kaggle-pediatric`` train NORMAL films only; the anomaly score is the mean squared
reconstruction error. The epoch is chosen by the reconstruction loss of the *normal* val films,
so no abnormal label plays any part in training or selection. Every setting is fixed here, in
advance; the official test (624 films) is scored once, with a 95% patient-bootstrap CI.

Usage (WORK split with --keep-official and preprocessed at 128 px):
    PYTHONPATH=src:scripts python scripts/oneclass_ae.py --work work/full --out work/oneclass_ae.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIZE, LATENT, EPOCHS, BATCH, LR, BETA = 64, 128, 40, 32, 1e-3, 1e-3


def films(work: Path, split: str) -> tuple[torch.Tensor, np.ndarray, object]:
    """Pediatric films of ``split`` at ``SIZE`` px, labels (1 = pneumonia) and rows."""
    from pediatric_shift import SOURCE

    from cxrad.labels import NORMAL
    from cxrad.manifest import STATUS_OK, read_manifest
    from cxrad.train.ood import cached_batches
    from cxrad.train.setup import open_work_cache

    df = read_manifest(work)
    rows = df[(df["source"] == SOURCE) & (df["status"] == STATUS_OK) & (df["split"] == split)]
    rows = rows[rows[NORMAL].notna()]
    cache = open_work_cache(work, 128, "letterbox")
    rows = rows[np.asarray(cache.rows_for(rows)) >= 0]
    x = torch.cat([F.interpolate(b, size=SIZE, mode="area") for b in cached_batches(rows, cache)])
    return x, 1.0 - rows[NORMAL].to_numpy(dtype=np.float64), rows


def model() -> torch.nn.Module:
    from monai.networks.nets import VarAutoEncoder

    return VarAutoEncoder(
        spatial_dims=2, in_shape=(1, SIZE, SIZE), out_channels=1, latent_size=LATENT,
        channels=(32, 64, 128, 256), strides=(2, 2, 2, 2),
    )  # fmt: skip


@torch.no_grad()
def errors(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Mean squared reconstruction error per film, from the latent mean (no sampling)."""
    net.eval()
    out = []
    for b in x.split(128):
        mu, _ = net.encode_forward(b)
        out.append(((net.decode_forward(mu) - b) ** 2).mean(dim=(1, 2, 3)))
    return torch.cat(out).numpy()


def train(x: torch.Tensor, x_val: torch.Tensor) -> tuple[torch.nn.Module, list[float], int]:
    """Train on ``x``; keep the weights of the epoch with the lowest normal-val error."""
    torch.manual_seed(0)
    net, best = model(), (np.inf, None, -1)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    history = []
    for epoch in range(EPOCHS):
        net.train()
        for idx in torch.randperm(len(x)).split(BATCH):
            recon, mu, logvar, _ = net(x[idx])
            kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
            loss = F.mse_loss(recon, x[idx]) + BETA * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
        history.append(float(errors(net, x_val).mean()))
        if history[-1] < best[0]:
            best = (history[-1], {k: v.clone() for k, v in net.state_dict().items()}, epoch)
    net.load_state_dict(best[1])
    return net, history, best[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    from oneclass import auroc_ci

    torch.set_num_threads(2)
    x, y, _ = films(args.work, "train")
    xv, yv, _ = films(args.work, "val")
    t0 = time.perf_counter()
    net, history, best = train(x[y == 0], xv[yv == 0])
    xt, yt, rows = films(args.work, "test")
    out = {
        "method": f"VarAutoEncoder {SIZE}px latent {LATENT}, {EPOCHS} epochs, beta {BETA}",
        "train_normal_films": int((y == 0).sum()),
        "val_normal_films": int((yv == 0).sum()),
        "best_epoch": best,
        "val_normal_error_per_epoch": [round(h, 6) for h in history],
        "train_seconds": round(time.perf_counter() - t0, 1),
        "test": {"normal": int((yt == 0).sum()), "pneumonia": int(yt.sum()),
                 **auroc_ci(errors(net, xt), yt, rows, args.n_boot)},
    }  # fmt: skip
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
