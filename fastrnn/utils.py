"""``keras.utils``' names: ``pad_sequences`` and ``set_random_seed``."""

from __future__ import annotations

import random

import numpy as np

from .preprocessing import pad_sequences

__all__ = ["pad_sequences", "set_random_seed"]

_seeds = None


def set_random_seed(seed):
    """As ``keras.utils.set_random_seed``: seed Python's and NumPy's global generators and
    fastrnn's own, from which every model created afterwards without a ``seed`` takes one (its
    initial weights, shuffling and dropout), so a script that calls this first reproduces."""
    global _seeds
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    _seeds = np.random.default_rng(int(seed))


def next_seed():
    """The seed for a model created without one: drawn from ``set_random_seed``'s generator, or
    None (fresh entropy) when it was never called."""
    return None if _seeds is None else int(_seeds.integers(2**63))
