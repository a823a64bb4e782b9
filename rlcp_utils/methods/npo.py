"""NPO (Zhang et al. 2024, as in open-unlearning: beta = 0.1, gamma = alpha = 1) on the forget answers,
plus the retain answers' NLL.

    L_total = (2 / beta) * log(1 + (P_theta(y|x) / P_ref(y|x))^beta) + retain_weight * CE(retain | x_no)

P is the answer's sequence probability given x_no; P_ref the frozen model's, computed once before training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlcp_utils.core.answers import answer_ce, answer_token_logp
from rlcp_utils.methods.common import (
    Step,
    no_context_pass,
    observer_probe,
    probe_accuracy,
    probe_state,
    retain_ce,
    retain_pass,
)


@dataclass(frozen=True)
class Weights:
    beta: float
    retain_weight: float


def weights(params) -> Weights:
    return Weights(params["npo_beta"], params["retain_weight"])


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al. 2024): (2/beta) * log(1 + (P_theta/P_ref)^beta), averaged over the batch; logp and
    ref_logp are the answers' sequence log-probabilities (summed over tokens). Equals (2/beta)*log 2 at
    P_theta = P_ref and -> 0 as P_theta -> 0. open-unlearning writes it as -(2/beta)*logsigmoid(-beta*ratio)."""
    return (2.0 / beta) * F.softplus(beta * (logp - ref_logp)).mean()


def npo_method_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
    out = no_context_pass(model, step, full_logits=False)
    h = probe_state(out, step)
    labels = step.labels(h.device)
    l_probe, probe_logits = observer_probe(probe, h, labels)
    ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)
    logp = torch.stack([lp.sum() for lp in answer_token_logp(out.logits, out.ids, out.prompt_lens, step.answer_lens)])
    l_npo = npo_loss(logp, step.forget_ref_logp.to(h.device), w.beta)
    l_retain = retain_ce(model, *retain_pass(model, step), step)
    total = l_probe + l_npo + w.retain_weight * l_retain
    return {"total": total, "l_probe": l_probe.detach(), "l_unlikelihood": l_npo, "ce_no_context": ce_no,
            "l_retain": l_retain, "adversary_acc": probe_accuracy(probe_logits, labels)}
