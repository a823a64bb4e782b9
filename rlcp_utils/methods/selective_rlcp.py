"""Selective RLCP, our variant for the unlearning benchmark (08): RLCP with a bounded forget term and a
retain stream on the training retain facts.

    L_total = lambda_adv * L_P + w_forget * L_bounded + w_retain * CE(retain answers | x_no)
              + lambda_kl * KL + lambda_rag * L_RAG

L_bounded is unlikelihood as Welleck et al. define it, the mean over answer tokens of -log(1 - p(token)): it
vanishes as p -> 0, where the paper's -CE grows without bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlcp_utils.core.answers import answer_ce, answer_token_logp
from rlcp_utils.methods.common import (
    Step,
    kl_term,
    no_context_pass,
    probe_accuracy,
    probe_state,
    rag_ce,
    retain_ce,
    retain_pass,
)
from rlcp_utils.methods.rlcp import gradient_reversal


@dataclass(frozen=True)
class Weights:
    lambda_rag: float
    lambda_adv: float
    forget_weight: float   # weight of the bounded forget term
    retain_weight: float   # weight of the retain CE
    lambda_kl: float


def weights(params) -> Weights:
    return Weights(params["lambda_rag"], params["lambda_adv"], params["selective_forget_weight"], params["retain_weight"],
                   params["lambda_kl"])


def bounded_unlikelihood(token_logp: list[torch.Tensor]) -> torch.Tensor:
    """Mean over answer tokens of -log(1 - p), then over the batch: large while the model still says the
    answer, -> 0 as p -> 0 (so, unlike -CE, it stops pushing once the answer is unlikely)."""
    # log(1 - p) = log(-expm1(log p)); clamp keeps p = 1 finite
    return torch.stack([-torch.log(-torch.expm1(lp.clamp(max=-1e-6))).mean() for lp in token_logp]).mean()


def selective_rlcp_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
    out = no_context_pass(model, step, full_logits=w.lambda_kl > 0)
    h = probe_state(out, step)
    labels = step.labels(h.device)
    probe_logits = probe(gradient_reversal(h, step.alpha))
    l_probe = F.cross_entropy(probe_logits, labels)
    total = w.lambda_adv * l_probe
    ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)
    l_bounded = bounded_unlikelihood(answer_token_logp(out.logits, out.ids, out.prompt_lens, step.answer_lens))
    l_retain = retain_ce(model, *retain_pass(model, step), step)
    l_forget = w.forget_weight * l_bounded
    total = total + l_forget + w.retain_weight * l_retain
    l_kl = kl_term(out, step) if w.lambda_kl > 0 else torch.zeros((), device=h.device)
    total = total + w.lambda_kl * l_kl
    l_rag = rag_ce(model, step)
    total = total + w.lambda_rag * l_rag
    return {"total": total, "l_rag": l_rag, "l_probe": l_probe.detach(), "l_unlikelihood": l_forget, "ce_no_context": ce_no,
            "l_kl": l_kl, "l_retain": l_retain, "adversary_acc": probe_accuracy(probe_logits, labels)}
