"""Just-RAG, the paper's Group B: the survival stream and the KL repair, nothing that forgets.

    L_total = lambda_rag * L_RAG + lambda_kl * KL(P_ref || P_theta)   (+ the observer probe's own loss)

The observer probe reads the same state as RLCP's adversary, detached: it gives the probe accuracy that the
paper reports for this baseline (88.5%) and acts on nothing but itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlcp_utils.core.answers import answer_ce
from rlcp_utils.methods.common import (
    Step,
    kl_term,
    no_context_pass,
    observer_probe,
    probe_accuracy,
    probe_state,
    rag_ce,
)


@dataclass(frozen=True)
class Weights:
    lambda_rag: float  # paper: 1.0
    lambda_kl: float   # paper: 5.0


def weights(params) -> Weights:
    return Weights(params["lambda_rag"], params["lambda_kl"])


def just_rag_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
    out = no_context_pass(model, step, full_logits=w.lambda_kl > 0)
    h = probe_state(out, step)
    labels = step.labels(h.device)
    l_probe, probe_logits = observer_probe(probe, h, labels)
    ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)  # logged: recall is kept
    total = l_probe
    l_kl = kl_term(out, step) if w.lambda_kl > 0 else torch.zeros((), device=h.device)
    total = total + w.lambda_kl * l_kl
    l_rag = rag_ce(model, step)
    total = total + w.lambda_rag * l_rag
    return {"total": total, "l_rag": l_rag, "l_probe": l_probe.detach(), "ce_no_context": ce_no, "l_kl": l_kl,
            "adversary_acc": probe_accuracy(probe_logits, labels)}
