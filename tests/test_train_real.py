"""Stage 7, train: the loss falls on real chest X-rays (Kaggle pediatric, 64 px)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrad.data import CachedDataset
from cxrad.manifest import make_rows, write_manifest
from cxrad.models import create_model
from cxrad.preprocess import PreprocessConfig, open_cache, preprocess_work
from cxrad.train import masked_bce_with_logits, pos_weight_from_labels

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def pediatric_work(pediatric_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny manifest of 64 real pediatric train images (32 normal, 32 pneumonia), cached at 64 px."""
    records = []
    for cls, other in (("NORMAL", "PNEUMONIA"), ("PNEUMONIA", "NORMAL")):
        files = sorted((pediatric_root / "chest_xray" / "train" / cls).glob("*.jpeg"))[:32]
        assert len(files) == 32, f"expected pediatric {cls} train images under {pediatric_root}"
        for f in files:
            records.append(
                {
                    "image_id": f"kaggle-pediatric/{cls}/{f.name}", "path": str(f), "source": "kaggle-pediatric",
                    cls: 1.0, other: 0.0, "sha1": hashlib.sha1(f.read_bytes()).hexdigest(), "status": "ok",
                }
            )  # fmt: skip
    work = tmp_path_factory.mktemp("pediatric") / "work"
    write_manifest(make_rows(records), work)
    preprocess_work(work, PreprocessConfig(size=64), workers=1)
    return work


def test_loss_falls_on_real_images(pediatric_work: Path) -> None:
    from cxrad.manifest import read_manifest

    df = read_manifest(pediatric_work)
    classes = ["NORMAL", "PNEUMONIA"]
    ds = CachedDataset(df, open_cache(pediatric_work, PreprocessConfig(size=64)), classes)
    assert len(ds) == 64 and ds.dropped == 0
    batch = list(range(0, 64, 2))  # 16 normal + 16 pneumonia
    x = torch.stack([ds[i][0] for i in batch])
    y = torch.from_numpy(ds.labels[batch])
    assert 0.05 < float(x.mean()) < 0.95  # real radiographs, not blank frames
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # fastest on the shared 2-core machine
    model = create_model("cxr-fast", num_classes=2).train()
    pw = torch.from_numpy(pos_weight_from_labels(ds.labels))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):  # overfit one real batch
        loss = masked_bce_with_logits(model(x), y, pw)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    torch.set_num_threads(threads)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.3 * losses[0], losses
