"""How sure a mean over the eval questions is: bootstrap intervals, by question or by passage.

CMRC asks several questions about each passage (the generator's 300 eval questions come from 179 passages),
and questions on one passage succeed or fail together more often than questions on two. Resampling questions
as if they were independent then gives an interval that is too narrow; resampling *passages* (a cluster
bootstrap: draw passages with replacement, keep all their questions, take the mean over the questions drawn)
does not. ``cluster_of`` reads the passage from a CMRC question id (``DEV_4_QUERY_2`` -> ``DEV_4``), or from
``passage_key``'s (a retrieval query: its gold passage's hash); keys without that form are their own cluster,
and with every cluster of size one the interval is the plain (i.i.d.) bootstrap's, draw for draw.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

_CMRC_QUESTION = re.compile(r"^(.+)_QUERY_\d+$")


def passage_key(passage: str, i: int) -> str:
    """The key of question ``i`` on ``passage`` when its id names no passage (a retrieval query): a short hash of
    the passage in the form ``cluster_of`` reads, so the questions of one passage (a chunk's two from a teacher, a
    repeated financial-qa passage's) are resampled together."""
    return f"P{hashlib.sha256(passage.encode('utf-8')).hexdigest()[:12]}_QUERY_{i}"


def cluster_of(key: str) -> str:
    """The passage of a CMRC question id; any other key is its own cluster."""
    match = _CMRC_QUESTION.match(key)
    return match.group(1) if match else key


def bootstrap_means(values: Sequence[float], clusters: Sequence[str] | None = None, n_resamples: int = 2000,
                    seed: int = 0) -> np.ndarray:
    """Means of ``n_resamples`` bootstrap resamples of ``values``: of the values (no clusters, or every cluster
    of size one), or of the clusters (each resample draws as many clusters as there are, with replacement)."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    if clusters is not None:
        labels, inverse = np.unique(np.asarray(clusters), return_inverse=True)
        if len(labels) < len(values):
            sums, counts = np.bincount(inverse, weights=values), np.bincount(inverse)
            picks = rng.integers(0, len(labels), size=(n_resamples, len(labels)))
            return sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    return values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)


def percentile_interval(means: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def mean_interval(values: Sequence[float], clusters: Sequence[str] | None = None, n_resamples: int = 2000,
                  seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``values``."""
    return percentile_interval(bootstrap_means(values, clusters, n_resamples, seed), level)


def paired_bootstrap(old: Sequence[float], new: Sequence[float], clusters: Sequence[str] | None = None,
                     n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(new - old) over resamples of the paired questions (or of their clusters)."""
    diffs = np.asarray(new, dtype=float) - np.asarray(old, dtype=float)
    return mean_interval(diffs, clusters, n_resamples, seed, level)
