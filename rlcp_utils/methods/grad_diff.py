"""GradDiff (open-unlearning's GradDiff, gamma = alpha = 1): gradient ascent on the forget answers' NLL
plus the retain answers' NLL.

    L_total = -CE(target answer | x_no) + retain_weight * CE(retain answers | x_no)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlcp_utils.core.answers import answer_ce
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
    retain_weight: float


def weights(params) -> Weights:
    return Weights(params["retain_weight"])


def grad_diff_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
    out = no_context_pass(model, step, full_logits=False)
    h = probe_state(out, step)
    labels = step.labels(h.device)
    l_probe, probe_logits = observer_probe(probe, h, labels)
    ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)
    l_forget = -ce_no                                   # ascent on the forget NLL
    total = l_probe + l_forget
    l_retain = retain_ce(model, *retain_pass(model, step), step)
    total = total + w.retain_weight * l_retain
    return {"total": total, "l_probe": l_probe.detach(), "l_unlikelihood": l_forget, "ce_no_context": ce_no,
            "l_retain": l_retain, "adversary_acc": probe_accuracy(probe_logits, labels)}
