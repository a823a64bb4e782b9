"""Attention at the prediction step: where the model looks when it answers a RAG prompt.

Entropy is in nats (natural log): H(p) = -sum_i p_i ln p_i, with 0 ln 0 = 0. For a distribution over n
tokens it lies in [0, ln n], so entropies over different token sets are comparable only with n stated.
"""

from __future__ import annotations

import numpy as np
import torch

from rlcp_utils.core.batching import autocast, batches, left_pad
from rlcp_utils.core.progress import track


def attention_entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Entropy in nats of distributions along `axis` (they are renormalised to sum to 1 first, so a
    sub-distribution, e.g. the attention on the context tokens only, can be passed directly)."""
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=axis)


def token_span(tokenizer, text: str, substring: str, start: int = 0, add_special_tokens: bool = False) -> list[int]:
    """Indices of the tokens that overlap the first occurrence of `substring` in text[start:] (tokenised as
    the prompt was). A multi-token name ("South Africa") gives all its tokens."""
    a = text.find(substring, start)
    if a < 0:
        raise ValueError(f"{substring!r} does not occur in the prompt after character {start}: {text!r}")
    b = a + len(substring)
    offsets = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)["offset_mapping"]
    return [i for i, (s, e) in enumerate(offsets) if e > s and s < b and e > a]


@torch.no_grad()
def prediction_attention(model, prompt_ids: list[list[int]], batch_size: int = 32, pad_id: int = 0,
                         desc: str | None = None) -> list[np.ndarray]:
    """Attention of the last prompt position (the one that predicts the answer) over the prompt's own
    tokens, for every layer and head: one array [n_layers, n_heads, len(prompt)] per prompt, each row a
    distribution (padding removed: left-padded keys get zero weight under the attention mask).
    Needs eager attention (load_model's default): fused kernels return no weights."""
    device = next(model.parameters()).device
    out: list[np.ndarray | None] = [None] * len(prompt_ids)
    for idx in track(list(batches(len(prompt_ids), batch_size)), desc):
        ids, mask = left_pad([prompt_ids[i] for i in idx], pad_id)
        with autocast(model):
            att = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_attentions=True,
                        logits_to_keep=1).attentions
        if att is None or att[0] is None:
            raise RuntimeError("the model returned no attention weights: load it with attn_implementation='eager'")
        last = torch.stack([a[:, :, -1, :] for a in att], dim=1).float().cpu().numpy()  # [b, layers, heads, width]
        for j, i in enumerate(idx):
            out[i] = last[j, :, :, ids.shape[1] - len(prompt_ids[i]):]
    return out
