"""Stage 3, split: union-find over rows (connected components) with deterministic ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def components(
    n: int, edges_i: np.ndarray, edges_j: np.ndarray, order_key: pd.Series
) -> np.ndarray:
    """Component id per row for the undirected graph on ``n`` rows; transitive by construction.

    Ids are ``0..k-1`` in order of each component's smallest ``order_key`` (e.g. ``image_id``),
    so they do not depend on row order.
    """
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    i = np.asarray(edges_i, dtype=np.int64)
    j = np.asarray(edges_j, dtype=np.int64)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.argsort(order_key.to_numpy(dtype=object), kind="stable")
    ranks = pd.unique(labels[first])
    remap = np.empty(len(ranks), dtype=np.int64)
    remap[ranks] = np.arange(len(ranks))
    return remap[labels]


def same_value_edges(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Edges chaining together the rows that share a non-null value (a star per value)."""
    v = values.reset_index(drop=True)
    v = v[v.notna()]
    if v.empty:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    codes, _ = pd.factorize(v)
    idx = v.index.to_numpy(dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    codes, idx = codes[order], idx[order]
    starts = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1]
    head = np.repeat(idx[starts], np.diff(np.r_[starts, len(idx)]))
    keep = head != idx
    return head[keep], idx[keep]
