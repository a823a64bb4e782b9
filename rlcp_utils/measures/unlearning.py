"""The unlearning field's checks on a trained arm (notebooks 09, 10): relearning attacks, fluency of the
no-context answers, and the per-token loss on text that no arm trains on.

- Relearning (Deeb & Roger 2024; Hu et al. 2024): split the targets into folds; fine-tune the unlearned model
  with plain cross-entropy on the *other* folds' facts and test the held-out fold, which it never sees again.
  If the facts come back, they were hidden, not removed. recovery = (after - unlearned) / (original - unlearned).
- Benign relearning: the same fine-tuning on unrelated text (GSM8K reference solutions).
- Fluency: does the free-text answer still name some country, and is it degenerate.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import torch
import torch.nn.functional as F

from rlcp_utils.core.answers import answer_ce_only
from rlcp_utils.core.batching import autocast, right_pad
from rlcp_utils.core.progress import track
from rlcp_utils.data.facts import fold_name
from rlcp_utils.data.inputs import TrainItem


def relearn_folds(n_facts: int, n_folds: int, seed: int) -> list[list[int]]:
    """A seeded partition of the target indices into n_folds folds of (nearly) equal size."""
    if not 2 <= n_folds <= n_facts:
        raise ValueError(f"relearning needs 2 <= folds <= facts, got {n_folds} folds of {n_facts} facts")
    order = np.random.default_rng(seed).permutation(n_facts)
    return [sorted(int(i) for i in order[k::n_folds]) for k in range(n_folds)]


def relearn_items(items: list[TrainItem], held_out: list[int]) -> list[TrainItem]:
    """The fine-tuning data of one fold: every training item whose fact is not held out."""
    held = set(held_out)
    return [it for it in items if it.fact not in held]


def _fine_tune_steps(model, batches: list[list[int]], loss_of, learning_rate: float, max_grad_norm: float):
    """Plain AdamW steps on the given batches (yields after each step, so callers can evaluate on the way)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate, weight_decay=0.0)
    model.train()
    for batch in batches:
        loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        yield float(loss.detach())
    model.eval()


def seeded_batches(n: int, n_steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """n_steps batches of indices into n items: seeded shuffled passes, concatenated."""
    rng = np.random.default_rng(seed)
    flat: list[int] = []
    while len(flat) < n_steps * batch_size:
        flat += rng.permutation(n).tolist()
    return [flat[k * batch_size:(k + 1) * batch_size] for k in range(n_steps)]


def relearn(model, items: list[TrainItem], budgets: list[int], evaluate, pad_id: int, learning_rate: float,
            batch_size: int, seed: int, max_grad_norm: float = 1.0) -> dict[int, object]:
    """Fine-tune a copy of `model` with the answers' cross-entropy on `items` (x_no + answer) and return
    {budget: evaluate(copy)} after each budget of steps (0 = before any step). `model` is left as it is."""
    tuned = copy.deepcopy(model)
    device = next(tuned.parameters()).device

    def loss_of(batch):
        its = [items[i] for i in batch]
        ids, mask = right_pad([it.no_ids for it in its], pad_id, device)
        return answer_ce_only(tuned, ids, mask, [it.no_prompt_len for it in its], [it.answer_len for it in its])

    out = {}
    if 0 in budgets:
        out[0] = evaluate(tuned)
    steps = _fine_tune_steps(tuned, seeded_batches(len(items), max(budgets), batch_size, seed), loss_of, learning_rate, max_grad_norm)
    for done, _ in enumerate(steps, start=1):
        if done in budgets:
            out[done] = evaluate(tuned)
            tuned.train()
    del tuned
    return out


def text_ids(tokenizer, texts: list[str], max_tokens: int = 128) -> list[list[int]]:
    """Token ids of plain texts (BOS where the tokenizer adds one), cut to max_tokens (a GSM8K problem and the
    start of its solution: enough text for a per-token loss, at a quarter of the cost of whole solutions)."""
    return [tokenizer(t).input_ids[:max_tokens] for t in texts]


def _text_loss(model, ids_list: list[list[int]], pad_id: int) -> torch.Tensor:
    """Per-text mean next-token cross-entropy, [n]."""
    device = next(model.parameters()).device
    ids, mask = right_pad(ids_list, pad_id, device)
    with autocast(model):
        logits = model(input_ids=ids, attention_mask=mask).logits
    losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
    valid = mask[:, 1:].float()
    return (losses * valid).sum(1) / valid.sum(1)


@torch.no_grad()
def mean_token_loss(model, ids_list: list[list[int]], pad_id: int, batch_size: int = 8, desc: str | None = None) -> np.ndarray:
    """Mean per-token loss of each text (natural log), one number per text."""
    out = []
    for k in track(list(range(0, len(ids_list), batch_size)), desc):
        out.append(_text_loss(model, ids_list[k:k + batch_size], pad_id).cpu().numpy())
    return np.concatenate(out)


def benign_relearn(model, ids_list: list[list[int]], n_steps: int, evaluate, pad_id: int, learning_rate: float,
                   batch_size: int, seed: int, max_grad_norm: float = 1.0):
    """Fine-tune a copy of `model` on unrelated texts for n_steps (language-model loss); evaluate(copy)."""
    tuned = copy.deepcopy(model)
    batches = seeded_batches(len(ids_list), n_steps, batch_size, seed)
    for _ in _fine_tune_steps(tuned, batches, lambda b: _text_loss(tuned, [ids_list[i] for i in b], pad_id).mean(),
                              learning_rate, max_grad_norm):
        pass
    result = evaluate(tuned)
    del tuned
    return result


# --- fluency ------------------------------------------------------------------------------------------------


def country_pattern(countries: list[str]) -> re.Pattern:
    """One regular expression matching any of the country names as whole words (accent- and case-folded)."""
    names = sorted({fold_name(c) for c in countries}, key=len, reverse=True)
    return re.compile(r"(?<![a-z])(" + "|".join(re.escape(n) for n in names) + r")(?![a-z])")


def names_a_country(text: str, pattern: re.Pattern) -> bool:
    """Whether the answer names some country (any, right or wrong)."""
    return pattern.search(fold_name(text)) is not None


_WORD = re.compile(r"[^\W\d_]{2,}")


def is_degenerate(text: str) -> bool:
    """A degenerate answer: no word of two or more letters (`** ** **`, `...`, empty), or one token making
    up at least half of four or more whitespace tokens (`the the the the`)."""
    if not _WORD.search(text):
        return True
    tokens = text.split()
    if len(tokens) >= 4:
        most = max(tokens.count(t) for t in set(tokens))
        return most * 2 >= len(tokens)
    return False
