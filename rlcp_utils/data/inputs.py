"""What every method trains on, built in one place: `training_inputs` returns a TrainingInputs.

- items: every target fact under every training template, as x_no (question alone) and x_rag (evidence +
  question), each with its answer appended; a target carries its probe label (the fact's index).
- reference: the frozen model's log-probabilities on every x_no at the KL positions, computed once before
  training (the inputs are fixed, so this equals running the frozen model at every step, tested).
- field (the unlearning benchmark's arms only): the training half of the retain facts as items, the frozen
  model's answer log-probabilities on the forget items (NPO's P_ref), and its states at RMU's layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlcp_utils.core.answers import answer_token_logp
from rlcp_utils.core.batching import autocast, right_pad
from rlcp_utils.data import facts as facts_mod


@dataclass
class TrainItem:
    """One fact under one training template: x_no and x_rag with the answer appended."""
    fact: int
    label: int
    no_ids: list[int]       # x_no prompt + answer
    no_prompt_len: int
    rag_ids: list[int]      # x_rag prompt + answer
    rag_prompt_len: int
    answer_len: int
    city_pos: int = 0       # x_no token that ends the city's name (where RMU's terms start)


def make_train_items(tokenizer, facts, questions, evidences, prompt_format) -> list[TrainItem]:
    """Training items for every fact x training question (x_rag pairs question k with evidence k mod n).
    Target facts carry their probe label; other facts (retain) get label -1."""
    qs = [q for q in questions if q.split == "train"]
    es = [e for e in evidences if e.split == "train"]
    no = facts_mod.build_items(tokenizer, facts, qs, prompt_format)
    rag = facts_mod.build_items(tokenizer, facts, qs, prompt_format, es)
    return [TrainItem(fact=a["fact"], label=facts[a["fact"]].get("label", -1), no_ids=a["prompt_ids"] + a["answer_ids"],
                      no_prompt_len=len(a["prompt_ids"]), rag_ids=b["prompt_ids"] + b["answer_ids"],
                      rag_prompt_len=len(b["prompt_ids"]), answer_len=len(a["answer_ids"]),
                      city_pos=facts_mod.last_token_of(tokenizer, a["prompt"], a["city"], add_special_tokens=prompt_format == "plain"))
            for a, b in zip(no, rag)]


def kl_positions(item: TrainItem, kl_on_answer: bool) -> range:
    """Positions of x_no whose next-token distribution the KL keeps close to the reference: every prompt
    position, and the answer positions too when kl_on_answer (then the KL opposes L_L at the answer)."""
    end = len(item.no_ids) - 1 if kl_on_answer else item.no_prompt_len - 1
    return range(0, end)


@torch.no_grad()
def reference_logp_now(reference, batch: list[TrainItem], pad_id: int, kl_on_answer: bool) -> list[torch.Tensor]:
    """The reference's log-probabilities on a batch's x_no at the KL positions. ReferenceCache computes them
    once for all items; calling this every step instead is the naive alternative (same numbers, tested)."""
    device = next(reference.parameters()).device
    ids, mask = right_pad([it.no_ids for it in batch], pad_id, device)
    with autocast(reference):
        logits = reference(input_ids=ids, attention_mask=mask).logits.float()
    return [torch.log_softmax(logits[j, list(kl_positions(it, kl_on_answer))], -1) for j, it in enumerate(batch)]


class ReferenceCache:
    """Log-probabilities of the frozen reference on every training x_no, at the KL positions, computed once."""

    def __init__(self, model, items: list[TrainItem], pad_id: int, kl_on_answer: bool, batch_size: int = 16,
                 dtype: torch.dtype = torch.float32):
        self.kl_on_answer = kl_on_answer
        self.logp: list[torch.Tensor] = []
        model.eval()
        for k in range(0, len(items), batch_size):
            # kept in CPU memory: on a GPU it would compete with the optimizer state (vocab x positions)
            self.logp += [lp.to("cpu", dtype) for lp in reference_logp_now(model, items[k:k + batch_size], pad_id, kl_on_answer)]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.logp[i]


@dataclass
class FieldInputs:
    """What the benchmark's terms need besides the forget batch, all fixed before training: the training
    retain items, the frozen model's answer log-probabilities on the forget items (NPO), and RMU's layer,
    coefficient c and the frozen model's states on the retain items (RMU's target c * u is drawn per seed)."""
    retain_items: list[TrainItem]
    forget_ref_logp: list[float] | None = None
    rmu_layer: int | None = None            # index into hidden_states (output of block rmu_layer - 1)
    rmu_coefficient: float = 0.0            # c
    retain_ref_states: list[torch.Tensor] | None = None  # [len(no_ids), hidden] per retain item


def rmu_layer_of(n_layers: int) -> int:
    """RMU's layer, by the rule of its reference setting: block 7 of Zephyr-7B's 32 (WMDP, open-unlearning),
    the same relative depth here; returned as an index into hidden_states (the block's output)."""
    return round(7 / 32 * n_layers) + 1


def _x_no_batches(model, items: list[TrainItem], pad_id: int, batch_size: int):
    """(batch, ids, mask) of the items' x_no, right-padded as in training, on the model's device."""
    device = next(model.parameters()).device
    for k in range(0, len(items), batch_size):
        batch = items[k:k + batch_size]
        yield (batch, *right_pad([it.no_ids for it in batch], pad_id, device))


@torch.no_grad()
def reference_answer_logp(model, items: list[TrainItem], pad_id: int, batch_size: int = 16) -> list[float]:
    """The frozen model's log P(answer | x_no), summed over the answer's tokens, per item (NPO's P_ref), with
    the same padding and precision as the training forward pass."""
    out = []
    for batch, ids, mask in _x_no_batches(model, items, pad_id, batch_size):
        with autocast(model):
            logits = model(input_ids=ids, attention_mask=mask).logits
        out += [float(lp.sum()) for lp in answer_token_logp(logits, ids, [it.no_prompt_len for it in batch], [it.answer_len for it in batch])]
    return out


@torch.no_grad()
def reference_states(model, items: list[TrainItem], layer: int, pad_id: int, batch_size: int = 16) -> list[torch.Tensor]:
    """The frozen model's hidden_states[layer] on each item's x_no (all its positions), float32 on the CPU."""
    out = []
    for batch, ids, mask in _x_no_batches(model, items, pad_id, batch_size):
        with autocast(model):
            h = model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
        out += [h[j, : len(it.no_ids)].float().cpu() for j, it in enumerate(batch)]
    return out


def field_inputs(reference, forget_items: list[TrainItem], retain_items: list[TrainItem], pad_id: int,
                 rmu_multiple: float) -> FieldInputs:
    """Everything the benchmark's arms need from the frozen model, computed once. RMU's coefficient follows
    adaptive RMU's form (Dang et al. 2025): c = rmu_multiple x the mean norm of the frozen model's states at
    RMU's layer on the forget prompts (from the city onwards), so c * u dominates the state whatever the
    model's scale (RMU's c = 6.5 was tuned to one model)."""
    layer = rmu_layer_of(reference.config.num_hidden_layers)
    forget_states = reference_states(reference, forget_items, layer, pad_id)
    norms = torch.cat([st[it.city_pos:].norm(dim=-1) for st, it in zip(forget_states, forget_items)])
    return FieldInputs(retain_items=retain_items, forget_ref_logp=reference_answer_logp(reference, forget_items, pad_id),
                       rmu_layer=layer, rmu_coefficient=rmu_multiple * float(norms.mean()),
                       retain_ref_states=reference_states(reference, retain_items, layer, pad_id))


@dataclass
class TrainingInputs:
    """The fixed inputs of a training job: its items, the number of probe classes, the pad token, the frozen
    model's KL reference, and (benchmark arms) the FieldInputs."""
    items: list[TrainItem]
    n_classes: int
    pad_id: int
    reference: ReferenceCache | None
    field: FieldInputs | None = None


def training_inputs(reference, tokenizer, targets, questions, evidences, prompt_format: str, kl_on_answer: bool,
                    benchmark_retain: list[dict] | None = None, rmu_multiple: float = 0.0) -> TrainingInputs:
    """The one builder of training inputs (02, 03, 08, the open questions, the bench, retraining a job).
    `reference` is the frozen original model; `benchmark_retain`: the retain facts the benchmark's arms train
    on (facts.split_retain's first half), to build their FieldInputs; None for the paper's arms."""
    items = make_train_items(tokenizer, targets, questions, evidences, prompt_format)
    ref = ReferenceCache(reference, items, tokenizer.pad_token_id, kl_on_answer)
    field = None
    if benchmark_retain is not None:
        retain_items = make_train_items(tokenizer, benchmark_retain, questions, evidences, prompt_format)
        field = field_inputs(reference, items, retain_items, tokenizer.pad_token_id, rmu_multiple)
    return TrainingInputs(items=items, n_classes=len(targets), pad_id=tokenizer.pad_token_id, reference=ref, field=field)
