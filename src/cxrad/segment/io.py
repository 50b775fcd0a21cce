"""Stage 3, segment: the one place the segmenter reads a film (the seam to the image reader).

Every format the predictor reads (PNG, JPEG, 16-bit, DICOM incl. MONOCHROME1) decodes here to a
2-D float32 grey film in [0, 1]. When ``cxrad.image.read_image`` lands this switches to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np


def read_film(source: str | Path | BinaryIO) -> np.ndarray:
    """Decode one film; raises ``cxrad.errors.DecodeError`` (a ``CxradError``) with a reason."""
    from cxrad.preprocess.decode import decode_image  # lazy: preprocess imports segment

    return decode_image(source)
