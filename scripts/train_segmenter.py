"""Train the shipped lung segmenter on the v7labs masks of the ieee8023 films (CPU, ~10 min).

Reproduce the shipped model (seed, split and schedule are all fixed here)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/train_segmenter.py \
        --data ../shared/data --out src/cxrad/assets/segmenter

The held-out films are a seeded 20 % of the ieee8023 *patients* (``metadata.csv`` patientid),
so no patient is on both sides. They are scored once, after the last epoch; nothing is selected
on them. Dice is measured at each film's own resolution, after the same clean-up inference uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai import transforms as mt
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from PIL import Image
from sklearn.model_selection import GroupShuffleSplit

from cxrad.evaluate.clustered_mean import clustered_mean_ci
from cxrad.preprocess import decode_image
from cxrad.segment.geometry import dice
from cxrad.segment.infer import Segmenter, model_input
from cxrad.segment.model import SegmenterConfig, build_unet, count_parameters, save_segmenter

logger = logging.getLogger("train_segmenter")


def load_pairs(data: Path) -> pd.DataFrame:
    """pairs.csv joined to the ieee8023 patient of each image."""
    pairs = pd.read_csv(data / "v7labs-lung-masks" / "pairs.csv")
    meta = pd.read_csv(data / "ieee8023-covid-chestxray" / "metadata.csv")
    patient = dict(zip(meta["filename"].astype(str), meta["patientid"].astype(str), strict=False))
    pairs["filename"] = pairs["image_path"].map(lambda p: Path(p).name)
    pairs["patient"] = pairs["filename"].map(patient)
    missing = pairs["patient"].isna()
    if missing.any():  # keep them, each as its own patient, and say so
        logger.warning("%d images have no metadata row; each is its own patient", missing.sum())
        pairs.loc[missing, "patient"] = "nometa:" + pairs.loc[missing, "filename"]
    return pairs


def split(pairs: pd.DataFrame, seed: int, held_out: float) -> tuple[np.ndarray, np.ndarray]:
    gss = GroupShuffleSplit(n_splits=1, test_size=held_out, random_state=seed)
    train, val = next(gss.split(pairs, groups=pairs["patient"]))
    return train, val


def load_item(data: Path, row: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    img = decode_image(data / row["image_path"])
    mask = np.asarray(Image.open(data / row["mask_path"]).convert("L")) > 127
    if mask.shape != img.shape:
        raise ValueError(f"{row['mask_path']}: mask {mask.shape} vs image {img.shape}")
    return img, mask


def small(img: np.ndarray, mask: np.ndarray, size: int) -> dict[str, np.ndarray]:
    x = model_input(img, size)[0].numpy()
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    m = torch.nn.functional.interpolate(m, size=(size, size), mode="area")[0].numpy()
    return {"image": x, "mask": (m > 0.5).astype(np.float32)}


def augmentation(seed: int) -> mt.Compose:
    """Geometry on image + mask together; intensity on the image only. No flips: the heart
    sits on the image's right, and a flipped film is not a film the model will meet."""
    keys = ("image", "mask")
    aug = mt.Compose(
        [
            mt.RandAffined(
                keys,
                prob=0.9,
                rotate_range=np.deg2rad(10),
                scale_range=(0.15, 0.15),
                translate_range=(12, 12),
                shear_range=(0.05, 0.05),
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            mt.RandAdjustContrastd("image", prob=0.5, gamma=(0.6, 1.6)),
            mt.RandScaleIntensityd("image", factors=0.2, prob=0.5),
            mt.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            mt.RandGaussianSmoothd("image", sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0), prob=0.2),
            mt.RandGaussianNoised("image", std=0.03, prob=0.3),
        ]
    )
    aug.set_random_state(seed=seed)
    return aug


def train(args: argparse.Namespace) -> None:
    set_determinism(args.seed)
    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.data)
    tr, va = split(pairs, args.seed, args.held_out)
    logger.info(
        "%d films: %d train, %d held out (%d / %d patients)",
        len(pairs),
        len(tr),
        len(va),
        pairs.iloc[tr]["patient"].nunique(),
        pairs.iloc[va]["patient"].nunique(),
    )
    config = SegmenterConfig(
        size=args.size, channels=tuple(args.channels), num_res_units=args.res_units
    )
    items = [small(*load_item(args.data, pairs.iloc[i]), args.size) for i in tr]
    aug = augmentation(args.seed)
    net = build_unet(config)
    logger.info("U-Net: %d parameters", count_parameters(net))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * int(np.ceil(len(items) / args.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    loss_fn = DiceCELoss(sigmoid=True)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    for epoch in range(args.epochs):
        net.train()
        order, total = rng.permutation(len(items)), 0.0
        for b in range(0, len(order), args.batch):
            batch = [aug(dict(items[i])) for i in order[b : b + args.batch]]
            x = torch.stack([torch.as_tensor(d["image"]) for d in batch]).float()
            y = torch.stack([torch.as_tensor(d["mask"]) for d in batch]).float()
            loss = loss_fn(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(batch)
        logger.info(
            "epoch %d/%d loss %.4f (%.0f s)",
            epoch + 1,
            args.epochs,
            total / len(items),
            time.time() - t0,
        )
    minutes = (time.time() - t0) / 60
    scores = evaluate(Segmenter.from_net(net, config), args.data, pairs.iloc[va])
    per_film = scores["dice"].to_numpy()
    ci = clustered_mean_ci(per_film, pd.factorize(scores["patient"])[0], seed=args.seed)
    metrics = {
        "data": "v7labs-lung-masks on ieee8023 films, held-out patients",
        "dice_mean": ci["mean"],
        "dice_ci95": ci["ci"],
        "dice_median": float(np.median(per_film)),
        "dice_min": float(per_film.min()),
        "n_films": ci["n"],
        "n_patients": ci["n_clusters"],
    }
    train_info = {
        "command": "OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/train_segmenter.py "
        "--data ../shared/data --out src/cxrad/assets/segmenter",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "n_train": len(tr),
        "minutes": round(minutes, 1),
        "parameters": count_parameters(net),
    }
    final = SegmenterConfig(**{**config.__dict__, "train": train_info, "metrics": metrics})
    save_segmenter(net, final, args.out)
    scores.to_csv(args.scores or Path("benchmarks/results/segmenter/heldout_dice.csv"), index=False)
    logger.info("held-out Dice %s", json.dumps(metrics))


def evaluate(seg: Segmenter, data: Path, rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for _, row in rows.iterrows():
        img, mask = load_item(data, row)
        out.append(
            {
                "image": row["image_path"],
                "patient": row["patient"],
                "dice": dice(seg.segment(img).mask, mask),
            }
        )
    return pd.DataFrame(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, default=Path("src/cxrad/assets/segmenter"))
    p.add_argument("--scores", type=Path, default=None, help="per-film held-out Dice CSV")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out", type=float, default=0.2)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--res-units", type=int, default=1)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(args)


if __name__ == "__main__":
    main()
