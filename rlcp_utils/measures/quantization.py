"""The quantization attack (Zhang et al., ICLR 2025, "Catastrophic failure of LLM unlearning via quantization",
arXiv 2410.16454): store an unlearned model the way models are shipped, in a 4- or 8-bit GGUF format, and read it
back. Unlearning that moves the weights by less than a quantization step is undone by the rounding.

Our offline model ships as such a file: the decoder blocks' linear weights in Q4_1 and the token embedding (tied to
the output layer) in Q8_0; norms stay fp32. So every weight of the original starts on that grid, and a trained arm
is the grid point plus what training moved. `quantized_copy` rounds a model's weights through gguf-py's own
quantize/dequantize for one format (Q4_1, Q4_0 or Q8_0) for the block weights, the embedding in Q8_0 as shipped:
the same tensors, the same blocks (32 consecutive weights of a row, along the input dimension, which the
GGUF's reordering of the attention rows leaves intact). `change_in_steps` measures how far training moved each
weight in units of the original's Q4_1 step of its block.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from gguf import GGMLQuantizationType, quants

from rlcp_utils.core.config import QUANT_FORMATS

FORMATS = QUANT_FORMATS
EMBEDDING_FORMAT = "Q8_0"  # the shipped GGUF's token_embd
BLOCK = 32  # weights per block in these three formats (gguf's GGML_QUANT_SIZES)
_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def round_trip(weight: torch.Tensor, fmt: str) -> torch.Tensor:
    """The weight as it reads back after quantizing it to `fmt` (blocks of 32 along the last dimension)."""
    if weight.shape[-1] % BLOCK:
        raise ValueError(f"{fmt} quantizes rows in blocks of {BLOCK}; this weight's rows have {weight.shape[-1]}")
    qtype = GGMLQuantizationType[fmt]
    data = weight.detach().to("cpu", torch.float32).numpy()
    back = quants.dequantize(quants.quantize(data, qtype), qtype).reshape(data.shape)
    return torch.from_numpy(np.ascontiguousarray(back)).to(weight.device, weight.dtype)


def quantized_weights(model) -> dict[str, str]:
    """{parameter name: format} of the weights the shipped GGUF quantizes: the blocks' linear weights (the attack's
    format, filled in by quantized_copy) and the token embedding (Q8_0)."""
    out = {}
    for name, p in model.named_parameters():
        if name.endswith(".weight") and p.dim() == 2 and any(f".{part}." in name for part in _LINEAR):
            out[name] = "block"
    out[_embedding_name(model)] = EMBEDDING_FORMAT
    return out


def _embedding_name(model) -> str:
    embedding = model.get_input_embeddings().weight
    return next(n for n, p in model.named_parameters() if p is embedding)


@torch.no_grad()
def quantized_copy(model, fmt: str):
    """A copy of the model with its shipped-quantized weights rounded through `fmt` (blocks) and Q8_0 (embedding);
    the model itself is left as it is, and a tied output layer stays tied to the rounded embedding."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    out = copy.deepcopy(model)
    params = dict(out.named_parameters())
    for name, kind in quantized_weights(out).items():
        params[name].copy_(round_trip(params[name], fmt if kind == "block" else kind))
    return out


def q4_1_steps(weight: torch.Tensor) -> torch.Tensor:
    """Q4_1's step of every weight's block: (max − min) / 15 over its 32 weights (16 levels between min and max)."""
    w = weight.detach().to("cpu", torch.float32).reshape(-1, BLOCK)
    step = (w.max(1).values - w.min(1).values) / 15
    return step.repeat_interleave(BLOCK).reshape(weight.shape)


@torch.no_grad()
def change_in_steps(original, trained, every: int = 1) -> np.ndarray:
    """|trained − original| of every block weight (every `every`-th, to bound memory), in units of the original's
    Q4_1 step of its block: below 0.5, a weight whose block keeps its min and max rounds back to the original."""
    theirs, blocks = dict(trained.named_parameters()), quantized_weights(original)
    parts = []
    for name, p in original.named_parameters():
        if blocks.get(name) != "block":
            continue
        step = q4_1_steps(p).flatten()[::every]
        moved = (theirs[name].detach().float().cpu() - p.detach().float().cpu()).abs().flatten()[::every]
        keep = step > 0
        parts.append((moved[keep] / step[keep]).numpy())
    return np.concatenate(parts)


@torch.no_grad()
def shipped_round_trip_changes(model) -> tuple[int, int]:
    """(weights changed, weights checked) when the shipped-quantized tensors are rounded through their shipped
    formats (blocks Q4_1, embedding Q8_0): 0 changed means the model sits exactly on the shipped file's grid."""
    params, changed, total = dict(model.named_parameters()), 0, 0
    for name, kind in quantized_weights(model).items():
        w = params[name]
        changed += int((round_trip(w, "Q4_1" if kind == "block" else kind) != w).sum())
        total += w.numel()
    return changed, total


def ratio_ci(numerator_by_unit, denominator_by_unit, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """mean(numerator) / mean(denominator) over the same units (facts), with a percentile interval resampling the
    units together (evaluate.bootstrap_ci's rule: a unit is a fact, its value already averaged over templates)."""
    num, den = np.asarray(numerator_by_unit, dtype=float), np.asarray(denominator_by_unit, dtype=float)
    if num.shape != den.shape or num.size == 0 or den.mean() == 0:
        raise ValueError("ratio_ci needs the same non-empty units on both sides and a non-zero denominator")
    idx = np.random.default_rng(seed).integers(0, num.size, size=(n_boot, num.size))
    den_means = den[idx].mean(axis=1)
    ratios = np.where(den_means > 0, num[idx].mean(axis=1) / np.where(den_means > 0, den_means, 1), np.nan)
    lo, hi = np.nanquantile(ratios, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(num.mean() / den.mean()), float(lo), float(hi)
