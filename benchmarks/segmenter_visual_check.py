"""Visual check of the shipped lung segmenter on films without masks (TBX11K, NIH).

Draws the contours on 20 seeded random films (10 of each) into one montage PNG. The montage
holds the shared images, so it is written OUTSIDE the repository (default /tmp) and never
committed: look at it, and describe what you saw in BENCHMARKS.md.

    PYTHONPATH=src python benchmarks/segmenter_visual_check.py --data ../shared/data \
        --out /tmp/cxrad-segmenter-check.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from cxrad.preprocess import decode_image
from cxrad.segment import Segmenter, overlay

TILE = 192


def pick(data: Path, seed: int, n: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    out = []
    for folder in ("tbx11k/imgs/tb", "nih-chestxray14/images"):
        files = sorted((data / folder).rglob("*.png"))
        out += [files[i] for i in sorted(rng.choice(len(files), size=n, replace=False))]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, default=Path("/tmp/cxrad-segmenter-check.png"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-source", type=int, default=10)
    args = p.parse_args()
    seg = Segmenter()
    tiles, rows = [], []
    for path in pick(args.data, args.seed, args.per_source):
        img = decode_image(path)
        lungs = seg.segment(img)
        rgb = overlay(img, lungs.sides.image_left, lungs.sides.image_right)
        tiles.append(np.asarray(Image.fromarray(rgb).resize((TILE, TILE))))
        rows.append({"image": str(path.relative_to(args.data)), **lungs.summary()})
    cols = 5
    grid = np.zeros((TILE * ((len(tiles) + cols - 1) // cols), TILE * cols, 3), np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        grid[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = t
    Image.fromarray(grid).save(args.out)
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
