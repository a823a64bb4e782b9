"""The answer of a prompt + answer row, and the positions that predict it: the one place that indexes them.

A right-padded row holds its prompt (length pl) and then its answer (length al). The logits at position t
predict token t + 1, so the answer's tokens ids[pl : pl + al] are predicted at positions pl - 1 ... pl + al - 2.
Training (every method's loss), the gradient measurements and the relearning attacks read answers from here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlcp_utils.core.batching import SharedPrefixPass, autocast


def answer_positions(prompt_lens: list[int], answer_lens: list[int]) -> tuple[list[int], list[int]]:
    """(rows, cols) of every position that predicts an answer token, row by row, token by token."""
    rows = [j for j, al in enumerate(answer_lens) for _ in range(al)]
    cols = [pl - 1 + k for pl, al in zip(prompt_lens, answer_lens) for k in range(al)]
    return rows, cols


def answer_ce(logits: torch.Tensor, ids: torch.Tensor, prompt_lens: list[int], answer_lens: list[int]) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens, averaged over each answer, then over the batch."""
    losses = []
    for j, (pl, al) in enumerate(zip(prompt_lens, answer_lens)):
        pred = logits[j, pl - 1: pl - 1 + al]
        losses.append(F.cross_entropy(pred.float(), ids[j, pl: pl + al]))
    return torch.stack(losses).mean()


def answer_token_logp(logits: torch.Tensor, ids: torch.Tensor, prompt_lens: list[int], answer_lens: list[int]) -> list[torch.Tensor]:
    """log P of each answer token given everything before it, one tensor [answer_len] per batch row."""
    out = []
    for j, (pl, al) in enumerate(zip(prompt_lens, answer_lens)):
        logp = torch.log_softmax(logits[j, pl - 1: pl - 1 + al].float(), -1)
        out.append(logp.gather(1, ids[j, pl: pl + al, None])[:, 0])
    return out


def answer_ce_from_hidden(model, hidden: torch.Tensor, ids: torch.Tensor, prompt_lens: list[int],
                          answer_lens: list[int]) -> torch.Tensor:
    """answer_ce from the last hidden states, projecting onto the vocabulary only where the answer is
    predicted (the same numbers as answer_ce on the full logits, tested)."""
    rows, cols = answer_positions(prompt_lens, answer_lens)
    with autocast(model):
        logits = model.lm_head(hidden[rows, cols]).float()
    targets = torch.cat([ids[j, pl: pl + al] for j, (pl, al) in enumerate(zip(prompt_lens, answer_lens))])
    per_token = F.cross_entropy(logits, targets, reduction="none")
    # mean over each answer's tokens, then over the batch (as answer_ce)
    owner = torch.tensor(rows, device=per_token.device)
    sums = torch.zeros(len(answer_lens), device=per_token.device).index_add(0, owner, per_token)
    return (sums / torch.tensor(answer_lens, device=per_token.device, dtype=sums.dtype)).mean()


def answer_ce_only(model, ids: torch.Tensor, mask: torch.Tensor, prompt_lens: list[int], answer_lens: list[int]) -> torch.Tensor:
    """answer_ce of a forward pass (shared prefix) that never projects the prompt positions onto the vocabulary."""
    return answer_ce_from_hidden(model, SharedPrefixPass(model, ids, mask).last_hidden_state, ids, prompt_lens, answer_lens)
