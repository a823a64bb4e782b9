"""Gradient geometry for the paper's Assumption 3.1 and Proposition 3.2 (the open-questions issue).

The paper assumes the gradient of the fact loss is nearly orthogonal to the gradient of the reasoning loss,
delta = |cos(grad L_fact, grad L_logic)| small, so that a step that removes a fact moves the reasoning loss by
at most (first order) eta * delta * |grad L_fact| * |grad L_logic|. This module measures both sides:
- `gradient(model, loss_fn)`: the gradient of a scalar loss, one flat vector per parameter group
  (embeddings, attention and MLP of each block, norms), so cosines can be read per group and for the whole model;
- `cosines(a, b)`: the cosine per group and over all parameters ("all");
- `first_order_steps(...)`: plain steps of size eta along -grad L_fact (and +grad L_fact), the measured change of
  each moved loss L (L_logic, ...), its first-order prediction -eta * <grad L_fact, grad L> and the proposition's bound;
- `answer_loss`: the loss measured (answer CE given a prompt, as in training), run in chunks of prompts so that a
  gradient over long prompts (GSM8K solutions) never holds every prompt's activations at once;
- `monitor(...)`: cosines and norms of several losses' gradients every few steps along training, as rows
  (`jobs.run_job(monitor=...)` saves them with the job).
"""

from __future__ import annotations

import copy
import math
import re

import torch

from rlcp_utils.core.answers import answer_ce_only
from rlcp_utils.core.batching import right_pad

_BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn|mlp)\.")


def parameter_group(name: str) -> str:
    """The group of a parameter by its name: 'embeddings', 'attention.<layer>', 'mlp.<layer>' or 'other'
    (norms, and an untied output head)."""
    if "embed_tokens" in name:
        return "embeddings"
    m = _BLOCK.search(name)
    if m:
        return f"{'attention' if m.group(2) == 'self_attn' else 'mlp'}.{int(m.group(1))}"
    return "other"


def _layout(model) -> tuple[list[tuple[str, int, torch.nn.Parameter]], dict[str, int]]:
    """Where each trainable parameter sits in the flat per-group vectors of `gradient`: (group, offset, parameter)
    in the order of named_parameters, and each group's length. `gradient` writes this layout, `_step` reads it."""
    sizes: dict[str, int] = {}
    where = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            group = parameter_group(name)
            where.append((group, sizes.get(group, 0), p))
            sizes[group] = sizes.get(group, 0) + p.numel()
    return where, sizes


def gradient(model, loss_fn) -> dict[str, torch.Tensor]:
    """Gradient of loss_fn(model) (a scalar) with respect to every trainable parameter, concatenated per
    parameter group (float32, on the CPU). A loss made of weighted chunks (AnswerLoss) is differentiated chunk by
    chunk and the gradients summed with the chunks' weights: the same gradient, with one chunk's activations in
    memory at a time. The sums go straight into the flat per-group vectors (no second copy of the model's size).
    The model's .grad fields are left as they were (None)."""
    where, sizes = _layout(model)
    flat = {group: torch.zeros(n, dtype=torch.float32) for group, n in sizes.items()}
    parts = loss_fn.chunks if isinstance(loss_fn, AnswerLoss) else [(1.0, loss_fn)]
    for weight, part in parts:
        grads = torch.autograd.grad(part(model), [p for _, _, p in where], allow_unused=True)
        for (group, start, p), g in zip(where, grads):
            if g is not None:
                flat[group][start:start + p.numel()].add_(g.detach().reshape(-1).float().cpu(), alpha=weight)
        del grads
    return flat


def cosines(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Cosine of two grouped gradients per group, and over all parameters ('all'). A group where either
    gradient is zero has no direction: NaN."""
    out = {}
    for k in a:
        na, nb = a[k].norm(), b[k].norm()
        out[k] = float(a[k] @ b[k] / (na * nb)) if na > 0 and nb > 0 else float("nan")
    dot = sum(float(a[k] @ b[k]) for k in a)
    na = sum(float(a[k] @ a[k]) for k in a) ** 0.5
    nb = sum(float(b[k] @ b[k]) for k in b) ** 0.5
    out["all"] = dot / (na * nb) if na > 0 and nb > 0 else float("nan")
    return out


def norm(g: dict[str, torch.Tensor]) -> float:
    return sum(float(v @ v) for v in g.values()) ** 0.5


@torch.no_grad()
def _step(model, g: dict[str, torch.Tensor], eta: float) -> None:
    """p -= eta * g for every trainable parameter, g in the grouped layout of `gradient`."""
    for group, start, p in _layout(model)[0]:
        p -= eta * g[group][start:start + p.numel()].view_as(p).to(p.device, p.dtype)


def first_order_steps(model, fact_loss, moved_losses: dict, etas: list[float], directions: list[int]) -> list[dict]:
    """For every loss L in `moved_losses` (name -> L(model)), every step size eta and direction (-1: the proposition's
    descent step, +1: the ascent that unlikelihood takes to forget), one step of size eta along direction * grad L_fact
    on a copy of the model: the measured change of L, its first-order prediction and Proposition 3.2's bound. The fact
    gradient is computed once, each L's once (the fact loss's own is reused when it is in `moved_losses`). With delta
    the measured |cos|, the bound equals |first-order prediction| (Cauchy-Schwarz): what a step tests is whether the
    O(eta^2) terms stay small at this eta, that is whether |measured| / bound stays near or below 1. Rows (moved, eta,
    direction, ...) in the order of moved_losses, then etas, then directions."""
    if any(d not in (-1, 1) for d in directions):
        raise ValueError(f"direction must be -1 (descent) or +1 (ascent), got {directions}")
    g_fact = gradient(model, fact_loss)
    rows = []
    for name, loss in moved_losses.items():
        g_moved = g_fact if loss is fact_loss else gradient(model, loss)
        dot = sum(float(g_fact[k] @ g_moved[k]) for k in g_fact)
        delta = abs(cosines(g_fact, g_moved)["all"])
        bound_per_eta = delta * norm(g_fact) * norm(g_moved)
        del g_moved  # one moved gradient in memory at a time (each is the model's size)
        with torch.no_grad():
            before = float(loss(model))
        for eta in etas:
            for direction in directions:
                moved = copy.deepcopy(model)
                with torch.no_grad():
                    _step(moved, g_fact, -direction * eta)
                    after = float(loss(moved))
                del moved
                rows.append({"moved": name, "eta": eta, "direction": direction, "measured_change": after - before,
                             "first_order_prediction": direction * eta * dot, "bound": eta * bound_per_eta, "delta": delta})
    return rows


class AnswerLoss:
    """L(model): the mean over prompts of each answer's mean cross-entropy given its prompt (teacher forcing), as in
    training. It is a weighted sum of chunks of at most `chunk` prompts (weight: the chunk's share of the prompts),
    so `gradient` can take it chunk by chunk; calling it sums the chunks."""

    def __init__(self, prompt_ids: list[list[int]], answer_ids: list[list[int]], pad_id: int, chunk: int = 8):
        n = len(prompt_ids)
        if n == 0 or n != len(answer_ids):
            raise ValueError(f"need as many answers as prompts, at least one: {n} prompts, {len(answer_ids)} answers")
        self.chunks = [(len(prompt_ids[i:i + chunk]) / n, self._chunk_loss(prompt_ids[i:i + chunk], answer_ids[i:i + chunk], pad_id))
                       for i in range(0, n, chunk)]

    @staticmethod
    def _chunk_loss(prompt_ids, answer_ids, pad_id):
        def loss(model):
            ids, mask = right_pad([p + a for p, a in zip(prompt_ids, answer_ids)], pad_id, next(model.parameters()).device)
            return answer_ce_only(model, ids, mask, [len(p) for p in prompt_ids], [len(a) for a in answer_ids])
        return loss

    def __call__(self, model) -> torch.Tensor:
        return sum(weight * part(model) for weight, part in self.chunks)


def answer_loss(prompt_ids: list[list[int]], answer_ids: list[list[int]], pad_id: int, chunk: int = 8) -> AnswerLoss:
    """The answer loss of these prompts (AnswerLoss), in chunks of `chunk` prompts."""
    return AnswerLoss(prompt_ids, answer_ids, pad_id, chunk)


def monitor(losses: dict, pairs: dict[str, tuple[str, str]], every: int, last: int | None = None):
    """A measurement along training (training.loop.train_arm's on_step): at every `every`-th step and at step `last`
    (the end of training, when given), the gradient of each loss in `losses` (name -> L(model)), the cosine of
    each named pair per parameter group and overall, and each gradient's norm. Rows: step, measure ('cosine' or
    'norm'), of (pair or loss name), group, value. The gradients are taken in the order of `losses` and each is
    dropped once no pair still needs it: a model-sized vector each, they are the measurement's memory."""
    def measure(step: int, model) -> list[dict]:
        if step % every and step != last:
            return []
        grads: dict[str, dict[str, torch.Tensor]] = {}
        todo = dict(pairs)
        rows = []
        for name, fn in losses.items():
            grads[name] = gradient(model, fn)
            rows.append({"step": step, "measure": "norm", "of": name, "group": "all", "value": norm(grads[name])})
            for pair, (a, b) in list(todo.items()):
                if a in grads and b in grads:
                    rows += [{"step": step, "measure": "cosine", "of": pair, "group": group, "value": c}
                             for group, c in cosines(grads[a], grads[b]).items()]
                    del todo[pair]
            for held in [k for k in grads if not any(k in ab for ab in todo.values())]:
                del grads[held]
        if todo:
            raise ValueError(f"pairs name losses that are not measured: {sorted(todo)}")
        return [r for r in rows if not (isinstance(r["value"], float) and math.isnan(r["value"]) and r["group"] != "all")]
    return measure
