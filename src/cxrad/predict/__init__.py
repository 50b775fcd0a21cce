"""Stage 9, predict: any chest X-ray in, findings, an abnormality score and heatmaps out.

``Predictor`` is the Python API (and what ``cxrad predict`` calls); ``export_onnx`` writes a run
as ONNX for ``--backend onnx``; ``grad_cam`` explains which region drives a class.
"""

from __future__ import annotations

from cxrad.predict.export import ensure_onnx, export_onnx
from cxrad.predict.heatmap import grad_cam, overlay, save_heatmap
from cxrad.predict.inputs import IMAGE_EXTENSIONS, InputFile, find_inputs
from cxrad.predict.output import FORMATS, Tally, write_records
from cxrad.predict.predictor import BACKENDS, THRESHOLD_MODES, Predictor

__all__ = [
    "BACKENDS",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "THRESHOLD_MODES",
    "InputFile",
    "Predictor",
    "Tally",
    "ensure_onnx",
    "export_onnx",
    "find_inputs",
    "grad_cam",
    "overlay",
    "save_heatmap",
    "write_records",
]
