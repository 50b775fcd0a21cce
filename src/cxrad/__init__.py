"""cxrad: chest X-ray anomaly detection, from dataset folders to findings with heatmaps.

The package is laid out by stage, in the order data flows through it::

    ingest -> manifest -> split -> preprocess -> data -> models -> train -> evaluate -> predict -> cli

Each stage imports only the stages to its left (plus the shared ``labels`` and ``errors``).
"""

from __future__ import annotations

__version__ = "0.1.0"
