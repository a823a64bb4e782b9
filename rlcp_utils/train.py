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

Speed without changing the function computed: the rows of a batch start with the same chat-template tokens
(about 40 of x_no's 50), so each pass runs that prefix once and the rest of every row against its cached keys
and values (SharedPrefixPass); one bf16 autocast region per step casts each weight once; AdamW is fused.
Together about 0.8x the wall time of an RLCP step on 2 CPU cores (measured: outputs/bench/).

Arms: just_rag (lambda_adv = 0, no L_L), unlikelihood (no RAG stream, no adversary), rlcp (all terms).
An arm with lambda_adv = 0 still trains a probe on the detached hidden state ("observer" probe): it does not
act on the backbone, but gives the probe accuracy the paper reports for its baseline.

The unlearning benchmark (notebook 08) adds arms through the same loop, with terms from the field
(FieldInputs carries what they need):
- forget_loss 'bounded': w * mean over answer tokens of -log(1 - p(token)) (unlikelihood as Welleck et al.
  define it; it vanishes as p -> 0, unlike the paper's -CE, which grows without bound);
- forget_loss 'npo': w * (2/beta) * log(1 + (P_theta(y|x) / P_ref(y|x))^beta), P the answer's sequence
  probability (Zhang et al. 2024, as in open-unlearning);
- retain_weight: CE on the answers of the *training* retain facts, without context (GradDiff's and NPO's
  retain NLL; selective RLCP's retain stream);
- rmu_weight / rmu_retain_weight: RMU (Li et al. 2024): the mean squared distance between a middle layer's
  states and c * u (u a fixed random unit vector) on the forget prompts, and between the model's and the
  frozen model's states on the retain prompts, both from the city's token onwards.
"""

from __future__ import annotations

import csv
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .batching import SharedPrefixPass, autocast, right_pad
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
    unlikelihood_weight: float      # weight of the forget term on the no-context answer
    lambda_kl: float
    forget_loss: str = "ce_ascent"  # 'ce_ascent' (-w * CE: the paper's L_L), 'bounded' or 'npo' (module docstring)
    npo_beta: float = 0.0
    retain_weight: float = 0.0      # CE on the training retain facts' no-context answers
    rmu_weight: float = 0.0         # RMU forget term (states towards c * u)
    rmu_retain_weight: float = 0.0  # RMU retain term (states kept at the frozen model's)

    @property
    def needs_retain(self) -> bool:
        return self.retain_weight > 0 or self.rmu_retain_weight > 0


PAPER_ARMS = ("just_rag", "unlikelihood", "rlcp")
BENCHMARK_ARMS = ("selective_rlcp", "grad_diff", "npo", "rmu")


def arm_weights(arm: str, params) -> ArmWeights:
    """The loss terms of an arm, from the profile's weights (the arms differ only here)."""
    p = params
    if arm == "rlcp":
        return ArmWeights(p["lambda_rag"], p["lambda_adv"], p["unlikelihood_weight"], p["lambda_kl"])
    if arm == "just_rag":  # paper Group B: (x, C) -> y with lambda_adv = 0 and the KL repair
        return ArmWeights(p["lambda_rag"], 0.0, 0.0, p["lambda_kl"])
    if arm == "unlikelihood":  # paper Group C: suppression without the RAG survival stream
        return ArmWeights(0.0, 0.0, p["unlikelihood_weight"], p["lambda_kl"])
    # --- the unlearning benchmark (08): our selective variant and the field's methods ---
    if arm == "selective_rlcp":  # RLCP with a bounded forget term and a retain stream on the training retain facts
        return ArmWeights(p["lambda_rag"], p["lambda_adv"], p["selective_forget_weight"], p["lambda_kl"],
                          forget_loss="bounded", retain_weight=p["retain_weight"])
    if arm == "grad_diff":  # forget NLL ascent + retain NLL (open-unlearning GradDiff: gamma = alpha = 1)
        return ArmWeights(0.0, 0.0, 1.0, 0.0, retain_weight=p["retain_weight"])
    if arm == "npo":  # NPO on the forget answers + retain NLL (open-unlearning NPO: beta = 0.1, gamma = alpha = 1)
        return ArmWeights(0.0, 0.0, 1.0, 0.0, forget_loss="npo", npo_beta=p["npo_beta"], retain_weight=p["retain_weight"])
    if arm == "rmu":  # steer a middle layer on forget inputs, keep it on retain inputs (gamma = alpha = 1)
        return ArmWeights(0.0, 0.0, 0.0, 0.0, rmu_weight=1.0, rmu_retain_weight=p["rmu_retain_weight"])
    raise ValueError(f"unknown arm {arm!r} (use one of {', '.join(PAPER_ARMS + BENCHMARK_ARMS)})")


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
    city_pos: int = 0       # x_no token that ends the city's name (where RMU's terms start)


def make_train_items(tokenizer, facts, questions, evidences, prompt_format) -> list[TrainItem]:
    """Training items for every fact x training question (x_rag pairs question k with evidence k mod n).
    Target facts carry their probe label; other facts (retain) get label -1."""
    from . import data
    from .probing import last_token_of

    qs = [q for q in questions if q.split == "train"]
    es = [e for e in evidences if e.split == "train"]
    no = data.build_items(tokenizer, facts, qs, prompt_format)
    rag = data.build_items(tokenizer, facts, qs, prompt_format, es)
    return [TrainItem(fact=a["fact"], label=facts[a["fact"]].get("label", -1), no_ids=a["prompt_ids"] + a["answer_ids"],
                      no_prompt_len=len(a["prompt_ids"]), rag_ids=b["prompt_ids"] + b["answer_ids"],
                      rag_prompt_len=len(b["prompt_ids"]), answer_len=len(a["answer_ids"]),
                      city_pos=last_token_of(tokenizer, a["prompt"], a["city"], add_special_tokens=prompt_format == "plain"))
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


def answer_token_logp(logits: torch.Tensor, ids: torch.Tensor, prompt_lens: list[int], answer_lens: list[int]) -> list[torch.Tensor]:
    """log P of each answer token given everything before it, one tensor [answer_len] per batch row."""
    out = []
    for j, (pl, al) in enumerate(zip(prompt_lens, answer_lens)):
        logp = torch.log_softmax(logits[j, pl - 1: pl - 1 + al].float(), -1)
        out.append(logp.gather(1, ids[j, pl: pl + al, None])[:, 0])
    return out


def bounded_unlikelihood(token_logp: list[torch.Tensor]) -> torch.Tensor:
    """Mean over answer tokens of -log(1 - p), then over the batch: large while the model still says the
    answer, -> 0 as p -> 0 (so, unlike -CE, it stops pushing once the answer is unlikely)."""
    # log(1 - p) = log(-expm1(log p)); clamp keeps p = 1 finite
    return torch.stack([-torch.log(-torch.expm1(lp.clamp(max=-1e-6))).mean() for lp in token_logp]).mean()


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al. 2024): (2/beta) * log(1 + (P_theta/P_ref)^beta), averaged over the batch; logp and
    ref_logp are the answers' sequence log-probabilities (summed over tokens). Equals (2/beta)*log 2 at
    P_theta = P_ref and -> 0 as P_theta -> 0. open-unlearning writes it as -(2/beta)*logsigmoid(-beta*ratio)."""
    return (2.0 / beta) * F.softplus(beta * (logp - ref_logp)).mean()


def masked_state_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's distance: squared error averaged over the hidden size, then over the masked positions of each
    row, then over the rows (open-unlearning's compute_activation_loss)."""
    per_pos = (h.float() - target.float()).pow(2).mean(-1) * mask
    return (per_pos.sum(1) / mask.sum(1).clamp(min=1)).mean()


def from_city_mask(batch: list[TrainItem], width: int, device) -> torch.Tensor:
    """[b, width] mask of the x_no positions from the city's last token to the answer's end (right padding).
    RMU's terms act here: earlier positions (instruction, template) are shared by forget and retain prompts,
    and the recall is decided at the last prompt token, which an answer-only mask would leave out."""
    mask = torch.zeros(len(batch), width, device=device)
    for j, it in enumerate(batch):
        mask[j, it.city_pos: len(it.no_ids)] = 1.0
    return mask


def _answer_ce_from_hidden(model, hidden: torch.Tensor, ids: torch.Tensor, prompt_lens: list[int], answer_lens: list[int]) -> torch.Tensor:
    with autocast(model):
        rows = [j for j, al in enumerate(answer_lens) for _ in range(al)]
        cols = [pl - 1 + k for pl, al in zip(prompt_lens, answer_lens) for k in range(al)]
        logits = model.lm_head(hidden[rows, cols]).float()
    targets = torch.cat([ids[j, pl: pl + al] for j, (pl, al) in enumerate(zip(prompt_lens, answer_lens))])
    per_token = F.cross_entropy(logits, targets, reduction="none")
    # mean over each answer's tokens, then over the batch (as answer_ce)
    owner = torch.tensor(rows, device=per_token.device)
    sums = torch.zeros(len(answer_lens), device=per_token.device).index_add(0, owner, per_token)
    return (sums / torch.tensor(answer_lens, device=per_token.device, dtype=sums.dtype)).mean()


def answer_ce_only(model, ids: torch.Tensor, mask: torch.Tensor, prompt_lens: list[int], answer_lens: list[int]) -> torch.Tensor:
    """answer_ce of a forward pass that projects onto the vocabulary only at the positions that predict the
    answer: the same numbers as answer_ce(model(ids).logits, ...), without the lm_head and its gradient at
    every other position (the x_rag pass needs no other logits; measured in the benchmark)."""
    return _answer_ce_from_hidden(model, SharedPrefixPass(model, ids, mask).last_hidden_state, ids, prompt_lens, answer_lens)


def kl_to_reference(logits: torch.Tensor, ref_logp: list[torch.Tensor], positions: list[range]) -> torch.Tensor:
    """KL(P_ref || P_theta), summed over the vocabulary, averaged over positions then over the batch."""
    losses = []
    for j, (ref, pos) in enumerate(zip(ref_logp, positions)):
        logp = torch.log_softmax(logits[j, list(pos)].float(), -1)
        ref = ref.to(logp.device, torch.float32)
        losses.append((ref.exp() * (ref - logp)).sum(-1).mean())
    return torch.stack(losses).mean()


@dataclass
class FieldInputs:
    """What the benchmark's terms need besides the forget batch, all fixed before training: the training
    retain items, the frozen model's answer log-probabilities on the forget items (NPO), and RMU's layer,
    steering target c * u and the frozen model's states on the retain items."""
    retain_items: list[TrainItem]
    forget_ref_logp: list[float] | None = None
    rmu_layer: int | None = None            # index into hidden_states (output of block rmu_layer - 1)
    rmu_coefficient: float = 0.0            # c
    retain_ref_states: list[torch.Tensor] | None = None  # [len(no_ids), hidden] per retain item
    rmu_target: torch.Tensor | None = None  # c * u, [hidden]: set by train_arm from the training seed


def rmu_layer_of(n_layers: int) -> int:
    """RMU's layer, by the rule of its reference setting: block 7 of Zephyr-7B's 32 (WMDP, open-unlearning),
    the same relative depth here; returned as an index into hidden_states (the block's output)."""
    return round(7 / 32 * n_layers) + 1


def control_vector(hidden_size: int, seed: int) -> torch.Tensor:
    """RMU's u: uniform in [0, 1) per coordinate, normalised to unit length (as in RMU), from the seed."""
    u = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()


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
class NoContextPass:
    """The forward pass of x_no as the loss terms read it: hidden states of every layer, and logits with the
    token ids and prompt lengths that index them (answer_ce / answer_token_logp read both forms alike)."""
    hidden_states: tuple
    logits: torch.Tensor
    ids: torch.Tensor
    prompt_lens: list[int]


def no_context_pass(model, ids: torch.Tensor, mask: torch.Tensor, batch: list[TrainItem], full_logits: bool) -> NoContextPass:
    """x_no through the model (SharedPrefixPass). full_logits: the vocabulary projection at every position (the
    KL needs them). Otherwise only at the positions that predict the answer, returned as [b, longest answer,
    vocab] with ids re-indexed to match: the same numbers without the lm_head over every prompt position (tested)."""
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


def field_terms(model, out: NoContextPass, ids: torch.Tensor, batch: list[TrainItem], retain_batch: list[TrainItem],
                retain_ref_states: list[torch.Tensor], forget_ref_logp: torch.Tensor | None, weights: ArmWeights,
                field: FieldInputs, pad_id: int) -> dict:
    """The benchmark's terms for one step (zero where the arm does not use them): the forget term when it is
    'bounded' or 'npo', the retain CE and RMU's two state distances. `out` is the pass of x_no, `ids` its tokens."""
    device = ids.device
    zero = torch.zeros((), device=device)
    terms = {"l_forget": zero, "l_retain": zero, "l_rmu": zero, "l_rmu_retain": zero}
    als = [it.answer_len for it in batch]
    if weights.unlikelihood_weight > 0 and weights.forget_loss == "bounded":
        terms["l_forget"] = bounded_unlikelihood(answer_token_logp(out.logits, out.ids, out.prompt_lens, als))
    elif weights.unlikelihood_weight > 0 and weights.forget_loss == "npo":
        logp = torch.stack([lp.sum() for lp in answer_token_logp(out.logits, out.ids, out.prompt_lens, als)])
        terms["l_forget"] = npo_loss(logp, forget_ref_logp.to(device), weights.npo_beta)
    if weights.rmu_weight > 0:
        h = out.hidden_states[field.rmu_layer]
        terms["l_rmu"] = masked_state_mse(h, field.rmu_target.to(device).expand_as(h), from_city_mask(batch, h.shape[1], device))
    if weights.needs_retain:
        rids, rmask = right_pad([it.no_ids for it in retain_batch], pad_id, device)
        base = SharedPrefixPass(model, rids, rmask, output_hidden_states=weights.rmu_retain_weight > 0)
        if weights.retain_weight > 0:
            terms["l_retain"] = _answer_ce_from_hidden(model, base.last_hidden_state, rids, [it.no_prompt_len for it in retain_batch],
                                                       [it.answer_len for it in retain_batch])
        if weights.rmu_retain_weight > 0:
            h = base.hidden_states[field.rmu_layer]
            ref = torch.zeros(h.shape, device=device)
            for j, st in enumerate(retain_ref_states):
                ref[j, : st.shape[0]] = st.to(device)
            terms["l_rmu_retain"] = masked_state_mse(h, ref, from_city_mask(retain_batch, h.shape[1], device))
    return terms


def rlcp_losses(model, probe: torch.nn.Module, batch: list[TrainItem], ref_logp: list[torch.Tensor],
                weights: ArmWeights, alpha: float, probe_layer: int, pad_id: int, kl_on_answer: bool,
                field: FieldInputs | None = None, field_batch: dict | None = None) -> dict:
    """Every term of Algorithm 1 for one batch; 'total' is what the optimizer minimises. (The benchmark's
    arms add field_terms; for the paper's arms `field` is None and those terms are zero.)"""
    device = next(model.parameters()).device
    ids, mask = right_pad([it.no_ids for it in batch], pad_id, device)
    # an arm without the KL needs the vocabulary only where the answer is predicted
    out = no_context_pass(model, ids, mask, batch, full_logits=weights.lambda_kl > 0)
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
    ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, [it.answer_len for it in batch])
    total = probe_term
    l_l = -weights.unlikelihood_weight * ce_no
    if weights.unlikelihood_weight > 0 and weights.forget_loss == "ce_ascent":
        total = total + l_l
    extra = {}
    if field is not None:
        extra = field_terms(model, out, ids, batch, field_batch["retain"], field_batch["retain_ref_states"],
                            field_batch["forget_ref_logp"], weights, field, pad_id)
        if weights.forget_loss != "ce_ascent":
            l_l = weights.unlikelihood_weight * extra["l_forget"]
            total = total + l_l
        total = total + weights.retain_weight * extra["l_retain"] + weights.rmu_weight * extra["l_rmu"] \
            + weights.rmu_retain_weight * extra["l_rmu_retain"]
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
            "l_kl": l_kl, "adversary_acc": acc, **{k: v for k, v in extra.items() if k != "l_forget"}}


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
FIELD_LOG_FIELDS = ["l_retain", "l_rmu", "l_rmu_retain"]  # logged too when the arm gets FieldInputs


def make_optimizer(model, probe: torch.nn.Module, learning_rate: float, probe_learning_rate: float) -> torch.optim.Optimizer:
    """AdamW without weight decay, the probe at its own learning rate. Fused: one kernel updates every tensor
    (measured on 2 CPU cores: 0.06 s instead of 0.26 s per step for the 135M model)."""
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW([
        {"params": [p for p in model.parameters() if p.requires_grad], "lr": learning_rate},
        {"params": probe.parameters(), "lr": probe_learning_rate},
    ], weight_decay=0.0, fused=fused)


def train_arm(model, items: list[TrainItem], n_classes: int, weights: ArmWeights, settings: TrainSettings,
              ref: ReferenceCache | None, pad_id: int, log_path: Path | None = None, desc: str = "train",
              field: FieldInputs | None = None, on_step=None):
    """Train `model` in place on one arm; returns the probe. Logs every step to CSV as it goes. Arms with
    retain terms see one batch of training retain items per step, in their own seeded order.
    `on_step(step, model)`, if given, is called before each update (step 0 sees the original model) and once
    after the last (step = number of steps): a measurement along training (09's gradient geometry)."""
    device = next(model.parameters()).device
    torch.manual_seed(settings.seed)
    probe = LinearProbe(model.config.hidden_size, n_classes).to(device)
    optimizer = make_optimizer(model, probe, settings.learning_rate, settings.probe_learning_rate)
    n_facts = len({it.fact for it in items})
    batches = epoch_schedule(items, n_facts, settings.epochs, settings.batch_size, settings.seed)
    steps_per_epoch = math.ceil(n_facts / settings.batch_size)
    if ref is None and weights.lambda_kl > 0:
        raise ValueError("lambda_kl > 0 needs a ReferenceCache of the frozen model")
    uses_field = weights.needs_retain or weights.rmu_weight > 0 or weights.forget_loss != "ce_ascent"
    if uses_field and field is None:
        raise ValueError("this arm's terms need FieldInputs (training retain items, NPO / RMU references)")
    if field is not None:
        if weights.rmu_weight > 0:  # RMU's random direction is part of the training randomness: one per seed
            field = replace(field, rmu_target=field.rmu_coefficient * control_vector(model.config.hidden_size, settings.seed))
        n_retain = len({it.fact for it in field.retain_items})
        retain_batches = epoch_schedule(field.retain_items, n_retain, settings.epochs, settings.batch_size, settings.seed + 10_000)
    fields = LOG_FIELDS + (FIELD_LOG_FIELDS if field is not None else [])
    model.train()
    log_file = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "w", newline="")
        writer = csv.DictWriter(log_file, fieldnames=fields)
        writer.writeheader()
    t0 = time.time()
    bar = Progress(desc, len(batches))
    try:
        for step, batch_idx in enumerate(batches):
            if on_step is not None:
                on_step(step, model)
            progress = step / len(batches)
            alpha = alpha_schedule(progress)
            batch = [items[i] for i in batch_idx]
            ref_logp = [ref[i] for i in batch_idx] if ref is not None else []
            field_batch = None
            if field is not None:
                r_idx = retain_batches[step % len(retain_batches)]
                field_batch = {"retain": [field.retain_items[i] for i in r_idx],
                               "retain_ref_states": [field.retain_ref_states[i] for i in r_idx] if field.retain_ref_states else [],
                               "forget_ref_logp": torch.tensor([field.forget_ref_logp[i] for i in batch_idx])
                               if field.forget_ref_logp is not None else None}
            # one autocast region for the step's forward passes: each weight is cast to bf16 once, not once per pass
            with autocast(model):
                losses = rlcp_losses(model, probe, batch, ref_logp, weights, alpha, settings.probe_layer, pad_id,
                                     settings.kl_on_answer, field, field_batch)
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
                writer.writerow({k: row.get(k, 0.0) for k in fields})
                log_file.flush()
        if on_step is not None:
            on_step(len(batches), model)
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


