"""RMU (Li et al. 2024, as in open-unlearning, gamma = alpha = 1): steer a middle layer's states on the
forget prompts towards c * u, a fixed random direction, and keep them at the frozen model's on the retain
prompts.

    L_total = mse(h_l(x_forget), c * u) + rmu_retain_weight * mse(h_l(x_retain), h_l^frozen(x_retain))

Both distances act on the positions from the city's last token to the answer's end: earlier positions are
shared by forget and retain prompts, and the recall is decided at the last prompt token. The layer and c
follow stated rules (data.inputs.rmu_layer_of, data.inputs.field_inputs); u is drawn from the training seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlcp_utils.core.answers import answer_ce
from rlcp_utils.data.inputs import TrainItem
from rlcp_utils.methods.common import (
    Step,
    no_context_pass,
    observer_probe,
    probe_accuracy,
    probe_state,
    retain_pass,
)


@dataclass(frozen=True)
class Weights:
    retain_weight: float  # open-unlearning alpha: 1


def weights(params) -> Weights:
    return Weights(params["rmu_retain_weight"])


def control_vector(hidden_size: int, seed: int) -> torch.Tensor:
    """RMU's u: uniform in [0, 1) per coordinate, normalised to unit length (as in RMU), from the seed."""
    u = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()


def masked_state_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's distance: squared error averaged over the hidden size, then over the masked positions of each
    row, then over the rows (open-unlearning's compute_activation_loss)."""
    per_pos = (h.float() - target.float()).pow(2).mean(-1) * mask
    return (per_pos.sum(1) / mask.sum(1).clamp(min=1)).mean()


def from_city_mask(batch: list[TrainItem], width: int, device) -> torch.Tensor:
    """[b, width] mask of the x_no positions from the city's last token to the answer's end (right padding)."""
    mask = torch.zeros(len(batch), width, device=device)
    for j, it in enumerate(batch):
        mask[j, it.city_pos: len(it.no_ids)] = 1.0
    return mask


def rmu_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
    out = no_context_pass(model, step, full_logits=False)
    h = probe_state(out, step)
    labels = step.labels(h.device)
    l_probe, probe_logits = observer_probe(probe, h, labels)
    ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)  # logged: is the answer gone?
    state = out.hidden_states[step.rmu_layer]
    device = state.device
    l_rmu = masked_state_mse(state, step.rmu_target.to(device).expand_as(state), from_city_mask(step.items, state.shape[1], device))
    base, _ = retain_pass(model, step, output_hidden_states=True)
    retain_state = base.hidden_states[step.rmu_layer]
    frozen = torch.zeros(retain_state.shape, device=device)
    for j, st in enumerate(step.retain_ref_states):
        frozen[j, : st.shape[0]] = st.to(device)
    l_rmu_retain = masked_state_mse(retain_state, frozen, from_city_mask(step.retain, retain_state.shape[1], device))
    total = l_probe + l_rmu + w.retain_weight * l_rmu_retain
    return {"total": total, "l_probe": l_probe.detach(), "ce_no_context": ce_no, "l_rmu": l_rmu,
            "l_rmu_retain": l_rmu_retain, "adversary_acc": probe_accuracy(probe_logits, labels)}
