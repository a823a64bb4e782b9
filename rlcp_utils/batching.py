"""Batches and padding: the small layer that evaluate, probing, attention and train all import.

Left padding (inference) puts every sequence's end at the last position; right padding (training) keeps
each sequence's positions at 0..len-1, so per-item positions (prompt and answer lengths) index directly.
`autocast` runs the forward passes in the precision the profile chose for this machine (model.py).
"""

from __future__ import annotations

import contextlib

import torch


def batches(n: int, size: int):
    """Index ranges of consecutive batches of at most `size` items."""
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding puts every sequence's end at the last position. Default position ids then shift the
    real tokens of a shorter row by a constant, which rotary attention does not see (it is relative)."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[j, width - len(s):] = 1
    return ids, mask


def right_pad(seqs: list[list[int]], pad_id: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, : len(s)] = torch.tensor(s)
        mask[j, : len(s)] = 1
    return ids.to(device), mask.to(device)


def autocast(model):
    """bf16 autocast when the model was loaded with precision 'bf16' (model.load_model sets
    `model.rlcp_precision`), else a no-op: weights stay fp32 either way (autocast casts per operation)."""
    if getattr(model, "rlcp_precision", "fp32") != "bf16":
        return contextlib.nullcontext()
    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type, dtype=torch.bfloat16)
