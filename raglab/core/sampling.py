"""Seeded samples: the one way this repo picks a subset, so the same seed picks the same rows everywhere."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def sample(examples: Sequence[T], max_samples: int | None, seed: int) -> list[T]:
    """At most ``max_samples`` examples, a seeded random subset (order kept)."""
    if max_samples is None or len(examples) <= max_samples:
        return list(examples)
    keep = set(random.Random(seed).sample(range(len(examples)), max_samples))
    return [e for i, e in enumerate(examples) if i in keep]


def seeded_order(n: int, seed: int) -> list[int]:
    """``range(n)`` in a seeded shuffle: the order ``seeded_prefix`` takes examples in."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def seeded_prefix(examples: Sequence[T], max_samples: int | None, seed: int) -> list[T]:
    """The first ``max_samples`` of a seeded shuffle (order kept): a larger cap keeps every example a smaller one
    chose, so a long run (a teacher's questions) can grow in steps and reuse what was asked."""
    if max_samples is None or len(examples) <= max_samples:
        return list(examples)
    keep = set(seeded_order(len(examples), seed)[:max_samples])
    return [e for i, e in enumerate(examples) if i in keep]


def distinct_sample(items: Sequence[T], n: int, seed: int) -> list[T]:
    """At most ``n`` distinct items, a seeded sample (order of first appearance kept)."""
    return sample(list(dict.fromkeys(items)), n, seed)
