"""The pieces every method's loss is built from (one definition each; the methods compose them).

- `Step`: one training step's inputs: the forget batch (target items), the frozen model's KL reference for
  it, the GRL strength alpha, and for the benchmark's arms a batch of training retain items with the frozen
  model's answers and states.
- `no_context_pass`: x_no through the model once (shared chat-template prefix), giving every layer's hidden
  states and the logits each term needs.
- The probe at layer l*, last prompt token of x_no: RLCP's adversary (behind the GRL) or, in every other
  arm, an "observer" trained on the detached state, which gives the probe accuracy the paper reports for
  its baseline and sends nothing back to the backbone.
- `kl_to_reference`, `rag_ce`, `retain_ce`: the KL repair, the survival stream and the retain stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rlcp_utils.core.answers import answer_ce_from_hidden, answer_ce_only
from rlcp_utils.core.batching import SharedPrefixPass, autocast, right_pad
from rlcp_utils.data.inputs import TrainItem, kl_positions


class LinearProbe(torch.nn.Module):
    """Linear classifier on the RMS-normalised hidden state. The normalisation has no parameters, so the
    probe stays linear in h's direction; without it the logits scale with the residual stream's norm (in the
    hundreds at deep layers) and the probe's first steps are dominated by exploding cross-entropies."""

    def __init__(self, hidden_size: int, n_classes: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, n_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.float()
        return self.linear(h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6))


@dataclass
class Step:
    """One training step's inputs (the loop builds it; a method's loss reads what it needs)."""
    items: list[TrainItem]                 # the forget batch: target facts under training templates
    ref_logp: list[torch.Tensor]           # frozen model's log-probs at each item's KL positions
    alpha: float                           # GRL strength at this step
    probe_layer: int                       # l*: index into hidden_states
    pad_id: int
    kl_on_answer: bool
    retain: list[TrainItem] = field(default_factory=list)            # benchmark: training retain batch
    retain_ref_states: list[torch.Tensor] = field(default_factory=list)  # frozen states of `retain` (RMU)
    forget_ref_logp: torch.Tensor | None = None                      # frozen log P(answer | x_no) (NPO)
    rmu_layer: int | None = None
    rmu_target: torch.Tensor | None = None                           # c * u (RMU)

    @property
    def answer_lens(self) -> list[int]:
        return [it.answer_len for it in self.items]

    def labels(self, device) -> torch.Tensor:
        """The probe's targets: each item's fact index."""
        return torch.tensor([it.label for it in self.items], device=device)


@dataclass
class NoContextPass:
    """The forward pass of x_no as the loss terms read it: hidden states of every layer, and logits with the
    token ids and prompt lengths that index them (answer_ce / answer_token_logp read both forms alike)."""
    hidden_states: tuple
    logits: torch.Tensor
    ids: torch.Tensor
    prompt_lens: list[int]


def no_context_pass(model, step: Step, full_logits: bool) -> NoContextPass:
    """x_no through the model (SharedPrefixPass). full_logits: the vocabulary projection at every position (the
    KL needs them). Otherwise only at the positions that predict the answer, returned as [b, longest answer,
    vocab] with ids re-indexed to match: the same numbers without the lm_head over every prompt position (tested)."""
    batch = step.items
    ids, mask = right_pad([it.no_ids for it in batch], step.pad_id, next(model.parameters()).device)
    base = SharedPrefixPass(model, ids, mask, output_hidden_states=True)
    if full_logits:
        return NoContextPass(base.hidden_states, base.logits(), ids, [it.no_prompt_len for it in batch])
    width = max(it.answer_len for it in batch)
    cols = torch.tensor([[min(it.no_prompt_len - 1 + k, ids.shape[1] - 1) for k in range(width)] for it in batch],
                        device=ids.device)
    hidden = base.last_hidden_state
    with autocast(model):
        logits = model.lm_head(hidden.gather(1, cols[..., None].expand(-1, -1, hidden.shape[-1])))
    answer_ids = torch.zeros(len(batch), width + 1, dtype=ids.dtype, device=ids.device)
    for j, it in enumerate(batch):  # position 0 stands for the last prompt token: the answer starts at 1
        answer_ids[j, 1: 1 + it.answer_len] = ids[j, it.no_prompt_len: it.no_prompt_len + it.answer_len]
    return NoContextPass(base.hidden_states, logits, answer_ids, [1] * len(batch))


def probe_state(out: NoContextPass, step: Step) -> torch.Tensor:
    """The state the probe reads: layer l* at the last prompt token of x_no, the position that predicts the
    answer (it must carry the country if the model is to say it)."""
    device = out.hidden_states[0].device
    last = torch.tensor([it.no_prompt_len - 1 for it in step.items], device=device)
    return out.hidden_states[step.probe_layer][torch.arange(len(step.items), device=device), last]


def observer_probe(probe: torch.nn.Module, h: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) of a probe that learns from the detached states: it acts on nothing but itself."""
    logits = probe(h.detach())
    return F.cross_entropy(logits, labels), logits


def probe_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(-1) == labels).float().mean()


def kl_to_reference(logits: torch.Tensor, ref_logp: list[torch.Tensor], positions: list[range]) -> torch.Tensor:
    """KL(P_ref || P_theta), summed over the vocabulary, averaged over positions then over the batch."""
    losses = []
    for j, (ref, pos) in enumerate(zip(ref_logp, positions)):
        logp = torch.log_softmax(logits[j, list(pos)].float(), -1)
        ref = ref.to(logp.device, torch.float32)
        losses.append((ref.exp() * (ref - logp)).sum(-1).mean())
    return torch.stack(losses).mean()


def kl_term(out: NoContextPass, step: Step) -> torch.Tensor:
    """The homeostatic repair: KL(frozen || model) on x_no at the KL positions (data.inputs.kl_positions)."""
    return kl_to_reference(out.logits, step.ref_logp, [kl_positions(it, step.kl_on_answer) for it in step.items])


def rag_ce(model, step: Step) -> torch.Tensor:
    """The survival stream L_RAG: cross-entropy of the answer given the evidence (x_rag)."""
    rids, rmask = right_pad([it.rag_ids for it in step.items], step.pad_id, next(model.parameters()).device)
    return answer_ce_only(model, rids, rmask, [it.rag_prompt_len for it in step.items], step.answer_lens)


def retain_pass(model, step: Step, output_hidden_states: bool = False) -> tuple[SharedPrefixPass, torch.Tensor]:
    """The training retain batch's x_no through the model: (pass, token ids)."""
    rids, rmask = right_pad([it.no_ids for it in step.retain], step.pad_id, next(model.parameters()).device)
    return SharedPrefixPass(model, rids, rmask, output_hidden_states=output_hidden_states), rids


def retain_ce(model, base: SharedPrefixPass, rids: torch.Tensor, step: Step) -> torch.Tensor:
    """The retain stream: cross-entropy of the training retain facts' answers without context."""
    return answer_ce_from_hidden(model, base.last_hidden_state, rids, [it.no_prompt_len for it in step.retain],
                                 [it.answer_len for it in step.retain])
