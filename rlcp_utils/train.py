"""RLCP (Algorithm 1 of the paper) and its baselines: one training loop, arms differ by their weights.

    L_total = lambda_rag * L_RAG + lambda_adv * L_P + L_L + lambda_kl * KL(P_ref || P_theta)

- L_RAG: cross-entropy on the answer tokens given the evidence (x_rag).
- L_P:   cross-entropy of a linear probe that reads the layer-l* hidden state of x_no through a gradient
         reversal layer (GRL) with strength alpha = 2 / (1 + exp(-10 p)) - 1, p = fraction of training done.
         The probe minimises L_P; the backbone receives -alpha * dL_P/dh and so maximises it.
- L_L:   -unlikelihood_weight * cross-entropy on the answer tokens without context (x_no): pushes the
         answer's probability down.
- KL:    KL(P_ref || P_theta) on x_no, P_ref the frozen original model, whose log-probabilities on the fixed
         training inputs are computed once before training (ReferenceCache), not at every step.

Arms: just_rag (lambda_adv = 0, no L_L), unlikelihood (no RAG stream, no adversary), rlcp (all terms).
An arm with lambda_adv = 0 still trains a probe on the detached hidden state ("observer" probe): it does not
act on the backbone, but gives the probe accuracy the paper reports for its baseline.
"""

from __future__ import annotations

import csv
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .batching import autocast, right_pad
from .progress import Progress

# --- the two pieces of the adversarial game --------------------------------------------------------


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


def alpha_schedule(progress: float) -> float:
    """The paper's sigmoid ramp: 0 at the start, 0.987 at the end (p = 1)."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


# --- arms ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmWeights:
    lambda_rag: float
    lambda_adv: float
    unlikelihood_weight: float
    lambda_kl: float


def arm_weights(arm: str, params) -> ArmWeights:
    """The loss weights of an arm, from the profile's RLCP weights (the arms differ only here)."""
    p = params
    if arm == "rlcp":
        return ArmWeights(p["lambda_rag"], p["lambda_adv"], p["unlikelihood_weight"], p["lambda_kl"])
    if arm == "just_rag":  # paper Group B: (x, C) -> y with lambda_adv = 0 and the KL repair
        return ArmWeights(p["lambda_rag"], 0.0, 0.0, p["lambda_kl"])
    if arm == "unlikelihood":  # paper Group C: suppression without the RAG survival stream
        return ArmWeights(0.0, 0.0, p["unlikelihood_weight"], p["lambda_kl"])
    raise ValueError(f"unknown arm {arm!r} (use rlcp, just_rag or unlikelihood)")


# --- batches ------------------------------------------------------------------------------------------


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


def make_train_items(tokenizer, targets, questions, evidences, prompt_format) -> list[TrainItem]:
    """Training items for every target x training question (x_rag pairs question k with evidence k mod n)."""
    from . import data

    qs = [q for q in questions if q.split == "train"]
    es = [e for e in evidences if e.split == "train"]
    no = data.build_items(tokenizer, targets, qs, prompt_format)
    rag = data.build_items(tokenizer, targets, qs, prompt_format, es)
    return [TrainItem(fact=a["fact"], label=targets[a["fact"]]["label"], no_ids=a["prompt_ids"] + a["answer_ids"],
                      no_prompt_len=len(a["prompt_ids"]), rag_ids=b["prompt_ids"] + b["answer_ids"],
                      rag_prompt_len=len(b["prompt_ids"]), answer_len=len(a["answer_ids"]))
            for a, b in zip(no, rag)]


def epoch_schedule(items: list[TrainItem], n_facts: int, epochs: int, batch_size: int, seed: int) -> list[list[int]]:
    """Batches of item indices: every epoch shows each fact once, under the next of its training templates
    (epoch e uses template (e + fact) mod n_templates), in a seeded random order."""
    by_fact: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        by_fact.setdefault(it.fact, []).append(i)
    rng = random.Random(seed)
    batches = []
    for e in range(epochs):
        picks = [by_fact[f][(e + f) % len(by_fact[f])] for f in range(n_facts)]
        rng.shuffle(picks)
        batches += [picks[k:k + batch_size] for k in range(0, len(picks), batch_size)]
    return batches



def kl_positions(item: TrainItem, kl_on_answer: bool) -> range:
    """Positions of x_no whose next-token distribution the KL keeps close to the reference: every prompt
    position, and the answer positions too when kl_on_answer (then the KL opposes L_L at the answer)."""
    end = len(item.no_ids) - 1 if kl_on_answer else item.no_prompt_len - 1
    return range(0, end)


# --- reference cache ------------------------------------------------------------------------------------


@torch.no_grad()
def reference_logp_now(reference, batch: list[TrainItem], pad_id: int, kl_on_answer: bool) -> list[torch.Tensor]:
    """The reference's log-probabilities on a batch's x_no at the KL positions. ReferenceCache computes them
    once for all items; calling this every step instead is the naive alternative (same numbers, tested; one
    extra forward pass per step, measured by the benchmark)."""
    device = next(reference.parameters()).device
    ids, mask = right_pad([it.no_ids for it in batch], pad_id, device)
    with autocast(reference):
        logits = reference(input_ids=ids, attention_mask=mask).logits.float()
    return [torch.log_softmax(logits[j, list(kl_positions(it, kl_on_answer))], -1) for j, it in enumerate(batch)]


class ReferenceCache:
    """Log-probabilities of the frozen reference on every training x_no, at the KL positions, computed once.

    Equivalent to running the reference every step (the inputs are fixed), without its cost."""

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


# --- the losses of one step -------------------------------------------------------------------------


def answer_ce(logits: torch.Tensor, ids: torch.Tensor, prompt_lens: list[int], answer_lens: list[int]) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens (logits at t predict token t+1), averaged over the batch."""
    losses = []
    for j, (pl, al) in enumerate(zip(prompt_lens, answer_lens)):
        pred = logits[j, pl - 1: pl - 1 + al]
        losses.append(F.cross_entropy(pred.float(), ids[j, pl: pl + al]))
    return torch.stack(losses).mean()


def answer_ce_only(model, ids: torch.Tensor, mask: torch.Tensor, prompt_lens: list[int], answer_lens: list[int]) -> torch.Tensor:
    """answer_ce of a forward pass that projects onto the vocabulary only at the positions that predict the
    answer: the same numbers as answer_ce(model(ids).logits, ...), without the lm_head and its gradient at
    every other position (the x_rag pass needs no other logits; measured in the benchmark)."""
    with autocast(model):
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        rows = [j for j, al in enumerate(answer_lens) for _ in range(al)]
        cols = [pl - 1 + k for pl, al in zip(prompt_lens, answer_lens) for k in range(al)]
        logits = model.lm_head(hidden[rows, cols]).float()
    targets = torch.cat([ids[j, pl: pl + al] for j, (pl, al) in enumerate(zip(prompt_lens, answer_lens))])
    per_token = F.cross_entropy(logits, targets, reduction="none")
    # mean over each answer's tokens, then over the batch (as answer_ce)
    owner = torch.tensor(rows, device=per_token.device)
    sums = torch.zeros(len(answer_lens), device=per_token.device).index_add(0, owner, per_token)
    return (sums / torch.tensor(answer_lens, device=per_token.device, dtype=sums.dtype)).mean()


def kl_to_reference(logits: torch.Tensor, ref_logp: list[torch.Tensor], positions: list[range]) -> torch.Tensor:
    """KL(P_ref || P_theta), summed over the vocabulary, averaged over positions then over the batch."""
    losses = []
    for j, (ref, pos) in enumerate(zip(ref_logp, positions)):
        logp = torch.log_softmax(logits[j, list(pos)].float(), -1)
        ref = ref.to(logp.device, torch.float32)
        losses.append((ref.exp() * (ref - logp)).sum(-1).mean())
    return torch.stack(losses).mean()


def rlcp_losses(model, probe: torch.nn.Module, batch: list[TrainItem], ref_logp: list[torch.Tensor],
                weights: ArmWeights, alpha: float, probe_layer: int, pad_id: int, kl_on_answer: bool) -> dict:
    """Every term of Algorithm 1 for one batch; 'total' is what the optimizer minimises."""
    device = next(model.parameters()).device
    ids, mask = right_pad([it.no_ids for it in batch], pad_id, device)
    with autocast(model):
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    # the probe reads the hidden state at the last prompt token: the position that predicts the answer
    last = torch.tensor([it.no_prompt_len - 1 for it in batch], device=device)
    h = out.hidden_states[probe_layer][torch.arange(len(batch), device=device), last]
    labels = torch.tensor([it.label for it in batch], device=device)
    if weights.lambda_adv > 0:
        probe_logits = probe(gradient_reversal(h, alpha))
        probe_term = weights.lambda_adv * F.cross_entropy(probe_logits, labels)
    else:  # observer probe: learns from the states, sends nothing back to the backbone
        probe_logits = probe(h.detach())
        probe_term = F.cross_entropy(probe_logits, labels)
    l_probe = F.cross_entropy(probe_logits.detach(), labels)
    ce_no = answer_ce(out.logits, ids, [it.no_prompt_len for it in batch], [it.answer_len for it in batch])
    total = probe_term
    l_l = -weights.unlikelihood_weight * ce_no
    if weights.unlikelihood_weight > 0:
        total = total + l_l
    l_kl = torch.zeros((), device=device)
    if weights.lambda_kl > 0:
        l_kl = kl_to_reference(out.logits, ref_logp, [kl_positions(it, kl_on_answer) for it in batch])
        total = total + weights.lambda_kl * l_kl
    l_rag = torch.zeros((), device=device)
    if weights.lambda_rag > 0:
        rids, rmask = right_pad([it.rag_ids for it in batch], pad_id, device)
        l_rag = answer_ce_only(model, rids, rmask, [it.rag_prompt_len for it in batch], [it.answer_len for it in batch])
        total = total + weights.lambda_rag * l_rag
    acc = (probe_logits.argmax(-1) == labels).float().mean()
    return {"total": total, "l_rag": l_rag, "l_probe": l_probe, "l_unlikelihood": l_l, "ce_no_context": ce_no,
            "l_kl": l_kl, "adversary_acc": acc}


# --- the loop -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    probe_learning_rate: float
    probe_layer: int
    kl_on_answer: bool
    max_grad_norm: float
    seed: int


LOG_FIELDS = ["step", "epoch", "progress", "alpha", "total", "l_rag", "l_probe", "l_unlikelihood", "ce_no_context",
              "l_kl", "adversary_acc", "seconds"]


def train_arm(model, items: list[TrainItem], n_classes: int, weights: ArmWeights, settings: TrainSettings,
              ref: ReferenceCache | None, pad_id: int, log_path: Path | None = None, desc: str = "train"):
    """Train `model` in place on one arm; returns the probe. Logs every step to CSV as it goes."""
    device = next(model.parameters()).device
    torch.manual_seed(settings.seed)
    probe = LinearProbe(model.config.hidden_size, n_classes).to(device)
    optimizer = torch.optim.AdamW([
        {"params": [p for p in model.parameters() if p.requires_grad], "lr": settings.learning_rate},
        {"params": probe.parameters(), "lr": settings.probe_learning_rate},
    ], weight_decay=0.0)
    n_facts = len({it.fact for it in items})
    batches = epoch_schedule(items, n_facts, settings.epochs, settings.batch_size, settings.seed)
    steps_per_epoch = math.ceil(n_facts / settings.batch_size)
    if ref is None and weights.lambda_kl > 0:
        raise ValueError("lambda_kl > 0 needs a ReferenceCache of the frozen model")
    model.train()
    log_file = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "w", newline="")
        writer = csv.DictWriter(log_file, fieldnames=LOG_FIELDS)
        writer.writeheader()
    t0 = time.time()
    bar = Progress(desc, len(batches))
    try:
        for step, batch_idx in enumerate(batches):
            progress = step / len(batches)
            alpha = alpha_schedule(progress)
            batch = [items[i] for i in batch_idx]
            ref_logp = [ref[i] for i in batch_idx] if ref is not None else []
            losses = rlcp_losses(model, probe, batch, ref_logp, weights, alpha, settings.probe_layer, pad_id,
                                 settings.kl_on_answer)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            row = {k: float(v.detach()) for k, v in losses.items()}
            row.update(step=step, epoch=step // steps_per_epoch, progress=round(progress, 4), alpha=alpha,
                       seconds=round(time.time() - t0, 2))
            bar.update(note=f"CE no context {row['ce_no_context']:.2f}, L_RAG {row['l_rag']:.2f}, adversary acc {row['adversary_acc']:.2f}")
            if log_file is not None:
                writer.writerow({k: row[k] for k in LOG_FIELDS})
                log_file.flush()
    finally:
        if log_file is not None:
            log_file.close()
    bar.close()
    model.eval()
    return probe


def settings_from_params(params, seed: int) -> TrainSettings:
    """A training job's settings: the profile's training parameters and one of its training seeds (the seed
    orders the batches and initialises the adversary probe)."""
    return TrainSettings(epochs=params["epochs"], batch_size=params["batch_size"], learning_rate=params["learning_rate"],
                         probe_learning_rate=params["probe_learning_rate"], probe_layer=params["probe_layer"],
                         kl_on_answer=params["kl_on_answer"], max_grad_norm=params["max_grad_norm"], seed=seed)


