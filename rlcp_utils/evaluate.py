"""Scoring answers and summarising with a spread.

`score_answers` runs the model once on prompt + answer tokens (teacher forcing) and reads off:
- answer_logprob: log P(answer tokens | prompt), summed over the answer's tokens;
- greedy_correct: whether greedy decoding would produce exactly the answer's tokens, which holds iff the
  argmax at every answer position is the answer token. This equals "greedy generation starts with the
  answer" and costs one forward pass instead of a generation loop.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding puts every sequence's end at the last position. Default position ids then shift the
    real tokens of a shorter row by a constant, which rotary attention does not see (it is relative)."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[j, width - len(s):] = 1
    return ids, mask


@torch.no_grad()
def score_answers(model, prompt_ids: list[list[int]], answer_ids: list[list[int]], batch_size: int = 64,
                  pad_id: int = 0, desc: str | None = None) -> dict[str, np.ndarray]:
    """Teacher-forced answer scores for each (prompt, answer) pair; inputs are token id lists."""
    if len(prompt_ids) != len(answer_ids):
        raise ValueError("prompt_ids and answer_ids must have the same length")
    device = next(model.parameters()).device
    logprob = np.zeros(len(prompt_ids))
    first_prob = np.zeros(len(prompt_ids))
    correct = np.zeros(len(prompt_ids), dtype=bool)
    order = np.argsort([len(p) + len(a) for p, a in zip(prompt_ids, answer_ids)])  # less padding
    for idx in tqdm(list(_batches(len(order), batch_size)), desc=desc, disable=desc is None, leave=False):
        rows = [order[i] for i in idx]
        ids, mask = _left_pad([prompt_ids[r] + answer_ids[r] for r in rows], pad_id)
        # Only the positions that predict answer tokens need the (large) vocabulary projection.
        keep = max(len(answer_ids[r]) for r in rows) + 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=keep).logits.float()
        for j, r in enumerate(rows):
            ans = answer_ids[r]
            # the logits at position t predict token t+1; the answer fills the last len(ans) positions
            pred = logits[j, keep - 1 - len(ans): keep - 1]
            target = torch.tensor(ans, device=pred.device)
            token_logp = torch.log_softmax(pred, dim=-1).gather(1, target[:, None])[:, 0]
            logprob[r] = token_logp.sum().item()
            first_prob[r] = token_logp[0].exp().item()
            correct[r] = bool((pred.argmax(-1) == target).all())
    return {"answer_logprob": logprob, "answer_prob": np.exp(logprob), "first_token_prob": first_prob,
            "greedy_correct": correct}


@torch.no_grad()
def greedy_generate(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int = 32,
                    desc: str | None = None) -> list[str]:
    """Greedy continuations (left-padded batches, KV cache), decoded without special tokens."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts: list[str] = [""] * len(prompt_ids)
    for idx in tqdm(list(_batches(len(prompt_ids), batch_size)), desc=desc, disable=desc is None, leave=False):
        ids, mask = _left_pad([prompt_ids[i] for i in idx], pad)
        width = ids.shape[1]
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad)
        for j, i in enumerate(idx):
            texts[i] = tokenizer.decode(out[j, width:], skip_special_tokens=True)
    return texts


def bootstrap_ci(values_by_unit: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval, resampling units (facts), each unit's value already averaged
    over its templates: templates of one fact are not independent draws."""
    v = np.asarray(values_by_unit, dtype=float)
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(v.mean()), float(lo), float(hi)
