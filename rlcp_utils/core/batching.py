"""Batches and padding: the small layer that evaluate, probing, attention and train all import.

Left padding (generation, hidden states at the last prompt token) puts every sequence's end at the last
position; right padding (training, teacher-forced scoring) keeps each sequence's positions at 0..len-1, so
per-item positions (prompt and answer lengths) index directly. `SharedPrefixPass` runs a right-padded batch
whose rows start alike (the chat template) with the shared prefix computed once. `autocast` runs the forward
passes in the precision the profile chose for this machine (model.py). `row_invariant` makes a model's passes a
function of each row alone, whatever else is in the batch (scoring answers runs under it).
"""

from __future__ import annotations

import contextlib
import inspect

import torch
import torch.nn.functional as F
from transformers import DynamicCache


def batches(n: int, size: int):
    """Index ranges of consecutive batches of at most `size` items."""
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def left_pad(seqs: list[list[int]], pad_id: int, min_width: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding puts every sequence's end at the last position. Default position ids then shift the
    real tokens of a shorter row by a constant, which rotary attention does not see (it is relative)."""
    width = max(*map(len, seqs), min_width)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[j, width - len(s):] = 1
    return ids, mask


def right_pad(seqs: list[list[int]], pad_id: int, device="cpu", min_width: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(*map(len, seqs), min_width)
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


# Rows per block of `row_invariant`'s matrix products. Measured on the offline model (2 CPU threads, fp32): 128 makes
# scoring 1.2x slower than unblocked products, which differ in the 5th decimal of a log-probability between batch sizes
ROW_BLOCK = 128


@contextlib.contextmanager
def row_invariant(model, rows: int = ROW_BLOCK):
    """Within this context, what the model computes for one row does not depend on the other rows of its batch,
    on the batch size or on the padding: the same prompt gets the same numbers in any batch, bit for bit.

    Why it is needed: a CPU matrix product picks its kernel (and so its order of summation) by the shape of the
    matrix, so a row's result can change in the last bits with the number of rows it is multiplied with (measured:
    rows 50-512 and 2048 of a bf16 product differ from the same rows in a product of 4096, by up to 0.25; in fp32,
    a batch of 3 differs from a batch of 2 or 8 by 5e-5), and bf16 attention changes with the padded width. A
    borderline answer then flips with the company it is scored in. Two rules remove every source we measured:
    - fp32 throughout (no autocast): fp32 attention gave the same numbers at any padded width and batch count;
    - every linear layer multiplies blocks of exactly `rows` rows (the last block padded with zero rows, which
      change nothing in the other rows), so every matrix product has one shape whatever the batch.
    The cost: on a CPU with native bf16, scoring takes about 2.8x the time of bf16 scoring; tests/test_evaluate.py
    checks the invariance."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    real = {}  # padding_skipped's masks of real positions, by the shape of the positions they describe

    def blocked(layer):
        def forward(x):
            keep = real.get(tuple(x.shape[:-1]))
            flat = x.reshape(-1, x.shape[-1]) if keep is None else x[keep]
            n = flat.shape[0]
            if n % rows:
                flat = torch.cat([flat, flat.new_zeros(rows - n % rows, flat.shape[1])])
            out = torch.cat([F.linear(block, layer.weight, layer.bias) for block in flat.split(rows)])[:n]
            if keep is None:
                return out.view(*x.shape[:-1], out.shape[-1])
            full = out.new_zeros(*x.shape[:-1], out.shape[-1])
            full[keep] = out
            return full
        return forward

    precision = getattr(model, "rlcp_precision", "fp32")
    model.rlcp_precision = "fp32"  # autocast(model) is then a no-op
    model.rlcp_real_positions = real
    for layer in linears:
        layer.forward = blocked(layer)  # an instance attribute: shadows the class's forward until deleted
    try:
        yield model
    finally:
        model.rlcp_precision = precision
        del model.rlcp_real_positions
        for layer in linears:
            del layer.forward


@contextlib.contextmanager
def padding_skipped(model, mask: torch.Tensor):
    """Inside row_invariant: the linear layers compute only the real positions of a right-padded batch (`mask`
    [rows, positions], 1 = real) and give zeros at its padding, which no real position attends to. A real position
    gets the same numbers, bit for bit (each is a row of a 128-row block either way), at the cost of the real
    positions alone: scoring's batches are about a fifth padding. It applies to the passes over inputs of the mask's
    shape (with SharedPrefixPass, give the mask of the positions after the shared prefix)."""
    real = getattr(model, "rlcp_real_positions", None)
    if real is None:
        raise RuntimeError("padding_skipped works inside row_invariant(model)")
    real[tuple(mask.shape)] = mask.bool()
    try:
        yield
    finally:
        del real[tuple(mask.shape)]


# --- one forward pass for rows that start alike ---------------------------------------------------------


# A shared prefix shorter than this runs with the rows: it saves little, and a pass over a few positions takes other
# matrix-product kernels than the same positions inside a longer pass (measured: scores then differ in the last bits
# between batches whose rows happen to share their first word or not)
MIN_SHARED_PREFIX = 16


def common_prefix_len(ids: torch.Tensor, mask: torch.Tensor) -> int:
    """How many leading tokens every row of a right-padded batch shares, leaving each row at least one
    token of its own (the chat template's system turn and instruction: about 36 of x_no's 50 tokens); 0 when
    that is fewer than MIN_SHARED_PREFIX."""
    same = ((ids == ids[:1]) & mask.bool()).all(0)
    shared = min(int(same.long().cumprod(0).sum()), int(mask.sum(1).min()) - 1)
    return shared if shared >= MIN_SHARED_PREFIX else 0


def _cache_kwarg(model) -> str:
    """The forward argument that takes a KV cache: 'cache' in recent transformers, 'past_key_values' before."""
    return "cache" if "cache" in inspect.signature(model.base_model.forward).parameters else "past_key_values"


class SharedPrefixPass:
    """model.base_model on a right-padded batch, with the rows' common prefix run once (batch 1) and the rest
    of every row attending to the prefix's cached keys and values. The same function of the weights as the
    plain batched pass (tested: same hidden states, losses and gradients), at about half the tokens for
    our training and scoring batches; gradients flow through the cache into the prefix, summed over the rows as the
    plain pass sums them over its copies. Every state is returned at full width [b, len, hidden] (the
    prefix's broadcast to every row), so positions index as in the plain pass."""

    def __init__(self, model, ids: torch.Tensor, mask: torch.Tensor, output_hidden_states: bool = False):
        self.model, self.batch = model, ids.shape[0]
        self.prefix_len = self.shared_len(ids, mask)
        with autocast(model):
            if self.prefix_len < 1:
                self.prefix = None
                self.rest = model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=output_hidden_states)
                return
            s, cache = self.prefix_len, DynamicCache(config=model.config)
            # one embedding lookup for both calls: one dense gradient of the (tied) embedding matrix, not two
            embeds = model.get_input_embeddings()(torch.cat([ids[0, :s], ids[:, s:].reshape(-1)]))
            self.prefix = model.base_model(inputs_embeds=embeds[None, :s], use_cache=True,
                                           output_hidden_states=output_hidden_states, **{_cache_kwarg(model): cache})
            cache.batch_repeat_interleave(self.batch)  # differentiable: the rows' gradients meet in the prefix
            self.rest = model.base_model(inputs_embeds=embeds[s:].view(self.batch, -1, embeds.shape[-1]), attention_mask=mask,
                                         use_cache=True, output_hidden_states=output_hidden_states, **{_cache_kwarg(model): cache})

    @staticmethod
    def shared_len(ids: torch.Tensor, mask: torch.Tensor) -> int:
        """How many leading positions the pass runs once for every row (0: none)."""
        return common_prefix_len(ids, mask) if ids.shape[0] > 1 else 0

    def _join(self, prefix_part: torch.Tensor | None, rest_part: torch.Tensor) -> torch.Tensor:
        if self.prefix is None:
            return rest_part
        return torch.cat([prefix_part.expand(self.batch, -1, -1), rest_part], 1)

    @property
    def last_hidden_state(self) -> torch.Tensor:
        return self._join(None if self.prefix is None else self.prefix.last_hidden_state, self.rest.last_hidden_state)

    @property
    def hidden_states(self) -> tuple:
        if self.prefix is None:
            return self.rest.hidden_states
        return tuple(self._join(p, r) for p, r in zip(self.prefix.hidden_states, self.rest.hidden_states))

    def logits(self) -> torch.Tensor:
        """The vocabulary projection at every position, computed once for the shared prefix (one lm_head call)."""
        head, rest = self.model.lm_head, self.rest.last_hidden_state
        with autocast(self.model):
            if self.prefix is None:
                return head(rest)
            s = self.prefix_len
            out = head(torch.cat([self.prefix.last_hidden_state[0], rest.reshape(-1, rest.shape[-1])]))
        return self._join(out[None, :s], out[s:].view(self.batch, rest.shape[1], -1))
