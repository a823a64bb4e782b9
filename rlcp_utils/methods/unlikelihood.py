"""Unlikelihood only, the paper's Group C: suppression without the survival stream.

    L_total = L_L + lambda_kl * KL(P_ref || P_theta),   L_L = -unlikelihood_weight * CE(answer | x_no)

(+ the observer probe's own loss, as in Just-RAG.) The -CE term is unbounded: it keeps growing once the
answer is unlikely (03 shows it past 100 nats), which the benchmark's bounded forget term avoids.
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
)


@dataclass(frozen=True)
class Weights:
    unlikelihood_weight: float  # paper: 0.5
    lambda_kl: float            # paper: 5.0


def weights(params) -> Weights:
    return Weights(params["unlikelihood_weight"], params["lambda_kl"])


def unlikelihood_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
    out = no_context_pass(model, step, full_logits=w.lambda_kl > 0)
    h = probe_state(out, step)
    labels = step.labels(h.device)
    l_probe, probe_logits = observer_probe(probe, h, labels)
    ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)
    l_l = -w.unlikelihood_weight * ce_no
    total = l_probe + l_l
    l_kl = kl_term(out, step) if w.lambda_kl > 0 else torch.zeros((), device=h.device)
    total = total + w.lambda_kl * l_kl
    return {"total": total, "l_probe": l_probe.detach(), "l_unlikelihood": l_l, "ce_no_context": ce_no, "l_kl": l_kl,
            "adversary_acc": probe_accuracy(probe_logits, labels)}
