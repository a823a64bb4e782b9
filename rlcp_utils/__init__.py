"""Shared code of the rlcp study package. The notebooks tell the story; this module holds reusable parts:

config (profiles and validation), model (loading, GGUF cache), data (facts, templates, prompts),
evaluate (scores, spreads, the per-arm evaluation), train (Algorithm 1: GRL, schedule, losses, one loop for
every arm, checkpoints), plots, outputs (atomic writes, metrics, manifest), pipeline (papermill runner).
"""

from __future__ import annotations

import random

import numpy as np

__version__ = "0.1.0"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch: every random choice in a notebook follows the profile's seed."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(n: int) -> None:
    """0 keeps torch's default (one thread per core)."""
    import torch

    if n > 0:
        torch.set_num_threads(n)
