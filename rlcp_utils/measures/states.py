"""Hidden states at chosen token positions, read out of a model: what the probes (measures/probing.py) are trained on
and what the training adversary is scored on (measures/evaluate.py). A module of its own so that scoring does not
import scikit-learn (about 2 s at every notebook's start)."""

from __future__ import annotations

import numpy as np
import torch

from rlcp_utils.core.batching import autocast, batches, left_pad
from rlcp_utils.core.progress import track


@torch.no_grad()
def hidden_states_at(model, prompt_ids: list[list[int]], positions: dict[str, list[int]] | None = None,
                     batch_size: int = 64, pad_id: int = 0, desc: str | None = None) -> dict[str, np.ndarray]:
    """Hidden states of every layer ([n_prompts, n_layers + 1, hidden], index 0 = embeddings) at one token
    per prompt for each named position list (token indices into each unpadded prompt; negative counts from
    the end). Always includes "last", the position that predicts the answer."""
    positions = dict(positions or {})
    positions.setdefault("last", [-1] * len(prompt_ids))
    device = next(model.parameters()).device
    out = {name: [] for name in positions}
    for idx in track(list(batches(len(prompt_ids), batch_size)), desc):
        ids, mask = left_pad([prompt_ids[i] for i in idx], pad_id)
        with autocast(model):
            hs = model.model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True).hidden_states
        width = ids.shape[1]
        rows = torch.arange(len(idx))
        for name, pos in positions.items():
            # left padding: token k of a prompt of length n sits at column width - n + k
            cols = torch.tensor([width - len(prompt_ids[i]) + (pos[i] % len(prompt_ids[i])) for i in idx])
            out[name].append(torch.stack([h[rows, cols] for h in hs], dim=1).float().cpu().numpy())  # [b, layers, d]
    return {name: np.concatenate(v) for name, v in out.items()}
