"""Stage 3, segment: find the lung fields of a chest film (a small MONAI U-Net, shipped).

The segmenter sits before ``preprocess`` in the import graph: it needs only the image reader
and torch/MONAI, so preprocessing can crop to the lungs and evaluation can score heatmaps
against them.

Example:
    >>> from cxrad.segment import Segmenter
    >>> lungs = Segmenter().segment(img)  # doctest: +SKIP
    >>> lungs.summary()["lung_area_fraction"]  # doctest: +SKIP
"""

from __future__ import annotations

from cxrad.segment.geometry import (
    LungSides,
    bounding_box,
    clean_mask,
    dice,
    expand_box,
    split_sides,
)
from cxrad.segment.infer import Lungs, Segmenter, model_input
from cxrad.segment.model import (
    ASSET_DIR,
    SegmenterConfig,
    build_unet,
    load_segmenter,
    save_segmenter,
)
from cxrad.segment.overlay import draw_contours, overlay
from cxrad.segment.run import segment_file, segment_files

__all__ = [
    "ASSET_DIR",
    "LungSides",
    "Lungs",
    "Segmenter",
    "SegmenterConfig",
    "bounding_box",
    "build_unet",
    "clean_mask",
    "dice",
    "draw_contours",
    "expand_box",
    "load_segmenter",
    "model_input",
    "overlay",
    "save_segmenter",
    "segment_file",
    "segment_files",
    "split_sides",
]
