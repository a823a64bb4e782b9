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
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

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


def _right_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, : len(s)] = torch.tensor(s)
        mask[j, : len(s)] = 1
    return ids.to(device), mask.to(device)


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
    ids, mask = _right_pad([it.no_ids for it in batch], pad_id, device)
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
    ids, mask = _right_pad([it.no_ids for it in batch], pad_id, device)
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
        rids, rmask = _right_pad([it.rag_ids for it in batch], pad_id, device)
        rout = model(input_ids=rids, attention_mask=rmask)
        l_rag = answer_ce(rout.logits, rids, [it.rag_prompt_len for it in batch], [it.answer_len for it in batch])
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
    bar = tqdm(batches, desc=desc)
    try:
        for step, batch_idx in enumerate(bar):
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
            bar.set_postfix(ce_no=f"{row['ce_no_context']:.2f}", rag=f"{row['l_rag']:.2f}", adv=f"{row['adversary_acc']:.2f}")
            if log_file is not None:
                writer.writerow({k: row[k] for k in LOG_FIELDS})
                log_file.flush()
    finally:
        if log_file is not None:
            log_file.close()
    model.eval()
    return probe


def settings_from_params(params) -> TrainSettings:
    return TrainSettings(epochs=params["epochs"], batch_size=params["batch_size"], learning_rate=params["learning_rate"],
                         probe_learning_rate=params["probe_learning_rate"], probe_layer=params["probe_layer"],
                         kl_on_answer=params["kl_on_answer"], max_grad_norm=params["max_grad_norm"], seed=params["seed"])


# --- checkpoints: one folder per arm, written atomically, tagged with what produced it ---------------


def checkpoint_dir(profile, arm: str) -> Path:
    return profile.output_dir / "checkpoints" / arm


def run_key(profile, targets: list[dict], prompt_format: str) -> str:
    """What a trained arm depends on: the data and training parameters (stages 1-3), the target facts and the
    prompt format. Analysis parameters (04 onwards) are left out: changing them never retrains an arm."""
    from .config import params_through

    blob = json.dumps([params_through(profile.params, 3), [(t["city"], t["country"]) for t in targets], prompt_format], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_checkpoint(profile, arm: str, model, probe, key: str, info: dict) -> Path:
    from .model import folder_written_atomically, save_weights

    final = checkpoint_dir(profile, arm)
    with folder_written_atomically(final) as tmp:
        save_weights(model, tmp / "model.safetensors")
        torch.save(probe.state_dict(), tmp / "probe.pt")
        (tmp / "checkpoint.json").write_text(json.dumps({"arm": arm, "run_key": key, **info}, indent=2))
    return final


def load_checkpoint(profile, arm: str, model, key: str | None = None):
    """Load an arm's trained weights into `model` (a freshly loaded original); returns (probe, info) or None
    when there is no finished checkpoint for this run key (then the arm must be trained)."""
    from safetensors.torch import load_file

    folder = checkpoint_dir(profile, arm)
    meta = folder / "checkpoint.json"
    if not meta.exists():
        return None
    info = json.loads(meta.read_text())
    if key is not None and info.get("run_key") != key:
        return None
    missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"checkpoint {folder} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    probe_state = torch.load(folder / "probe.pt", map_location="cpu")
    probe = LinearProbe(*reversed(probe_state["linear.weight"].shape))
    probe.load_state_dict(probe_state)
    return probe.to(next(model.parameters()).device), info


def train_and_evaluate_arm(profile, arm: str, study, items: list[TrainItem], ref: ReferenceCache | None) -> dict:
    """Train one arm from the original model (or load its finished checkpoint for the same run key), evaluate
    it like Group A plus the adversary probe, and record everything under outputs/<profile>/.

    Returns {"rows": evaluation rows, "adversary": probe rows, "seconds": training wall time, "trained": bool}."""
    import pandas as pd

    from . import evaluate, model as model_mod, outputs

    P = profile
    lm, tok = model_mod.load_model(P["model"], device=P["device"])
    key = run_key(P, study.targets, study.prompt_format)
    loaded = load_checkpoint(P, arm, lm, key)
    log_path = P.sub("logs") / f"train_{arm}.csv"
    if loaded is None:
        t0 = time.time()
        probe = train_arm(lm, items, len(study.targets), arm_weights(arm, P), settings_from_params(P), ref,
                          tok.pad_token_id, log_path, desc=f"train {arm}")
        seconds = time.time() - t0
        save_checkpoint(P, arm, lm, probe, key, {"train_seconds": round(seconds, 1), "weights": vars(arm_weights(arm, P))})
        trained = True
    else:
        probe, info = loaded
        seconds, trained = info["train_seconds"], False
    rows, per_item = evaluate.evaluate_arm(lm, tok, arm, {"targets": study.targets, "retain": study.retain},
                                           study.questions, study.evidences, study.prompt_format, P["eval_batch_size"],
                                           P["n_bootstrap"], P["seed"], desc=f"evaluate {arm}")
    adversary = evaluate.adversary_accuracy(lm, probe, tok, study.targets, study.questions, study.prompt_format,
                                            P["probe_layer"], P["eval_batch_size"], P["n_bootstrap"], P["seed"])
    outputs.write_table(P, f"eval_{arm}", pd.DataFrame(rows))
    outputs.write_table(P, f"per_item_{arm}", pd.DataFrame(per_item))
    for section, entries in evaluate.metrics_from_rows(rows).items():
        outputs.update_metrics(P, section, entries)
    for r in adversary:
        key_ = f"targets.adversary_probe_accuracy.{r['split']}"
        outputs.update_metrics(P, "arms", {arm: {key_: r["value"]}})
        outputs.update_metrics(P, "spread", {arm: {key_: [r["ci_low"], r["ci_high"]]}})
        outputs.update_metrics(P, "chance", {arm: {key_: r["chance"]}})
        outputs.update_metrics(P, "n_items", {key_: {"facts": r["n_facts"], "prompts": r["n_prompts"]}})
    outputs.update_metrics(P, "training", {arm: {"seconds": round(seconds, 1), "weights": vars(arm_weights(arm, P)),
                                                 "steps": len(epoch_schedule(items, len(study.targets), P["epochs"],
                                                                             P["batch_size"], P["seed"]))}})
    return {"rows": rows, "adversary": adversary, "seconds": seconds, "trained": trained}


def load_arm(profile, arm: str, study):
    """The model of one arm for analysis: 'original' or a trained arm's checkpoint for the current settings.
    Returns (model, tokenizer, probe or None). Stops with what to run when the checkpoint is missing or stale."""
    from . import model as model_mod

    lm, tok = model_mod.load_model(profile["model"], device=profile["device"])
    if arm == "original":
        return lm, tok, None
    loaded = load_checkpoint(profile, arm, lm, run_key(profile, study.targets, study.prompt_format))
    if loaded is None:
        raise FileNotFoundError(
            f"no checkpoint of arm {arm!r} for the current settings in {checkpoint_dir(profile, arm)} (checkpoints are "
            f"not committed): train it with `make reproduce PROFILE={profile.name}`, which reruns 02/03 when one is missing")
    return lm, tok, loaded[0]
