"""Shared code of the rlcp study package. The notebooks tell the story; this module holds reusable parts:

config (profiles and validation), notebook (what every notebook does first: parameters, profile, seeds),
model (loading, GGUF cache, precision), data (facts, templates, prompts), batching (padding, autocast),
evaluate (scores, spreads, the per-arm evaluation, seed summaries), train (Algorithm 1: GRL, schedule,
losses, one loop for every arm), jobs (one training job per arm and seed, checkpoints, loading arms),
results (the tidy results record), claims (the paper's claims and their rules, Table 1), plots, outputs
(atomic writes, tables, figures, manifest), progress (log lines for long work), pipeline (papermill runner).
"""

from __future__ import annotations

import random
import warnings

import numpy as np

# transformers imports tqdm.auto, which in a notebook kernel without ipywidgets warns with a path of this
# machine in every executed notebook; the study prints its own progress lines (progress.py) instead.
warnings.filterwarnings("ignore", message="IProgress not found")

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
