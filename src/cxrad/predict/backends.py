"""Stage 9, predict: the engines that turn a batch of prepared images into logits.

Both take ``(B, 1, S, S)`` float32 images in [0, 1] and return ``(B, C)`` float32 logits;
the input normalisation lives inside the model (and so inside the ONNX graph).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from cxrad.models import Classifier
from cxrad.predict.export import INPUT_NAME

logger = logging.getLogger(__name__)


def cpu_cores() -> int:
    """Cores this process may use (respects CPU affinity, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


class TorchBackend:
    """PyTorch eager inference, without autograd."""

    name = "torch"

    def __init__(self, model: Classifier, device: str | torch.device = "cpu") -> None:
        self.model = model.eval()
        self.device = torch.device(device)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
            return self.model(x).float().cpu().numpy()


class OnnxBackend:
    """ONNX Runtime on the CPU, one intra-op thread per available core."""

    name = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or cpu_cores()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        logger.debug("onnxruntime session on %s, %d threads", path, opts.intra_op_num_threads)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32)
        return self.session.run(None, {INPUT_NAME: x})[0]
