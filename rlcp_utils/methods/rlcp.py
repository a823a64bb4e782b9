"""RLCP, the paper's Regenerative Logic-Core Protocol (Algorithm 1):

    L_total = lambda_rag * L_RAG + lambda_adv * L_P + L_L + lambda_kl * KL(P_ref || P_theta)

- L_RAG: cross-entropy on the answer tokens given the evidence (x_rag): the survival stream.
- L_P:   cross-entropy of a linear probe that reads the layer-l* hidden state of x_no through a gradient
         reversal layer (GRL) with strength alpha = 2 / (1 + exp(-10 p)) - 1, p = fraction of training done.
         The probe minimises L_P; the backbone receives -alpha * dL_P/dh and so maximises it.
- L_L:   -unlikelihood_weight * cross-entropy on the answer tokens without context (x_no).
- KL:    KL(P_ref || P_theta) on x_no, P_ref the frozen original model (data.inputs.ReferenceCache).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlcp_utils.core.answers import answer_ce
from rlcp_utils.methods.common import (
    Step,
    kl_term,
    no_context_pass,
    probe_accuracy,
    probe_state,
    rag_ce,
)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.alpha * grad, None


def gradient_reversal(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by -alpha in the backward pass."""
    return _GradReverse.apply(x, alpha)


def alpha_schedule(progress: float) -> float:
    """The paper's sigmoid ramp: 0 at the start, 0.987 at the end (p = 1)."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


@dataclass(frozen=True)
class Weights:
    lambda_rag: float           # paper: 1.0
    lambda_adv: float           # paper: 2.0
    unlikelihood_weight: float  # paper: 0.5
    lambda_kl: float            # paper: 5.0


def weights(params) -> Weights:
    return Weights(params["lambda_rag"], params["lambda_adv"], params["unlikelihood_weight"], params["lambda_kl"])


def rlcp_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
    """Algorithm 1's inner loop body (steps 3-6) on one batch; 'total' is what the optimizer minimises."""
    out = no_context_pass(model, step, full_logits=w.lambda_kl > 0)  # x_no: states of every layer, logits
    h = probe_state(out, step)                                       # layer l*, last token of x_no
    labels = step.labels(h.device)
    probe_logits = probe(gradient_reversal(h, step.alpha))           # the adversary reads h through the GRL
    l_probe = F.cross_entropy(probe_logits, labels)                  # L_P: probe descends, backbone ascends
    total = w.lambda_adv * l_probe
    ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)
    l_l = -w.unlikelihood_weight * ce_no                             # L_L: push the no-context answer down
    total = total + l_l
    l_kl = kl_term(out, step) if w.lambda_kl > 0 else torch.zeros((), device=h.device)  # repair on x_no (11 sweeps it)
    total = total + w.lambda_kl * l_kl
    l_rag = rag_ce(model, step)                                      # L_RAG: answer given the evidence
    total = total + w.lambda_rag * l_rag
    return {"total": total, "l_rag": l_rag, "l_probe": l_probe.detach(), "l_unlikelihood": l_l, "ce_no_context": ce_no,
            "l_kl": l_kl, "adversary_acc": probe_accuracy(probe_logits, labels)}
