"""Stage 1, ingest: where each film was collected (the ``site`` column), from source metadata.

A pooled dataset is several hospitals and web collections under one name. The site lets the
shortcut audit and the leave-one-source-out benchmark see those sub-sources. The COVID-19
Radiography Database ships one ``<class>.metadata.xlsx`` per class with the URL each film came
from; that URL is the site hint (by block, not exact per image: see ../shared/data/README.md).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

_HOSTS = {
    "sirm.org": "sirm",
    "eurorad.org": "eurorad",
    "bimcv.cipf.es": "bimcv",
    "radiopaedia.org": "radiopaedia",
    "twitter.com": "twitter",
}
_KAGGLE_SLUGS = {
    "rsna-pneumonia-detection-challenge": "rsna",
    "chest-xray-pneumonia": "kermany",
}


def site_from_url(url: object) -> str | None:
    """A short site name for a source URL: ``sirm``, ``github:ieee8023``, ``kaggle:rsna`` ...

    Example:
        >>> site_from_url("https://github.com/ieee8023/covid-chestxray-dataset")
        'github:ieee8023'
    """
    if not isinstance(url, str) or "://" not in url:
        return None
    m = re.match(r"https?://(?:www\.)?([^/]+)/?([^/?#]*)/?([^/?#]*)", url.strip())
    if m is None:
        return None
    host, first, second = m.group(1).lower(), m.group(2), m.group(3)
    if host == "github.com" and first:
        return f"github:{first.lower()}"
    if host == "kaggle.com":
        slug = second if first in ("c", "competitions") or second else first
        return "kaggle:" + _KAGGLE_SLUGS.get(slug.lower(), slug.lower() or "unknown")
    return _HOSTS.get(host, host)


def radiography_sites(base: Path) -> dict[str, str]:
    """``file stem (lower case) -> site`` from the ``*.metadata.xlsx`` sheets in ``base``.

    A sheet that can't be read is logged and skipped: the films keep a null site, not an error,
    because the labels come from the folders, not from these sheets.
    """
    sites: dict[str, str] = {}
    for sheet in sorted(base.glob("*.metadata.xlsx")):
        try:
            table = pd.read_excel(sheet, dtype=str)
            names, urls = table["FILE NAME"], table["URL"]
        except (OSError, ValueError, KeyError, ImportError) as e:
            logger.warning("%s: metadata sheet not read (%s); its films get no site", sheet, e)
            continue
        for name, url in zip(names, urls, strict=True):
            site = site_from_url(url)
            if isinstance(name, str) and site:
                sites[name.strip().lower()] = site
    return sites


def add_radiography_sites(base: Path, df: pd.DataFrame) -> pd.DataFrame:
    """Fill ``site`` for COVID-19 Radiography Database rows from the metadata sheets in ``base``."""
    sites = radiography_sites(base)
    if not sites or not len(df):
        return df
    stems = df["path"].map(lambda p: Path(str(p)).stem.lower())
    out = df.copy()
    out["site"] = stems.map(sites).astype("string")
    return out
