# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/08_unlearning.ipynb)
#
# # 08 · Forgetting or damage? RLCP against the unlearning field
#
# RLCP drives the targets' no-context recall to 0%, but in 03 it does the same to facts it never trained
# on, and its no-context answers degenerate. Is that forgetting or damage? This notebook trains the field's
# standard methods and a **selective** variant of RLCP (ours, not in the paper) next to the paper's arms, all
# through the same loop (`rlcp_utils/training/loop.py`) on the same 15 targets with the same budget (epochs,
# batch size, learning rate, steps) and the same training seeds, and asks the first of the field's questions:
# **is the forgetting targeted?** Recall of the targets against recall of *held-out* retain facts that no arm
# trains on, every training seed. The other questions are asked of the models trained here in the next
# notebooks: does the knowledge come back under relearning (09_relearning); does the model still speak, and is
# the information still there (10_unlearning_checks, which also holds the benchmark table and the verdicts).
#
# | arm | forget term (no-context answer) | retain term (training retain facts) | other terms |
# |---|---|---|---|
# | rlcp (03) | −0.5·CE (unbounded) | – | L_RAG, λ_adv·L_P (GRL), λ_KL·KL |
# | just_rag, unlikelihood (02) | – / −0.5·CE | – | as in the paper |
# | **selective_rlcp** (ours) | −log(1 − p) per answer token (bounded) | CE | L_RAG, λ_adv·L_P (GRL), λ_KL·KL |
# | **grad_diff** (GradDiff) | −CE (gradient ascent) | CE | – |
# | **npo** (NPO, β = 0.1) | (2/β)·log(1 + (P_θ/P_ref)^β) | CE | – |
# | **rmu** (RMU) | ‖h_l − c·u‖² at layer l | ‖h_l − h_l^frozen‖² | – |
#
# GradDiff, NPO and RMU follow their papers and open-unlearning's `src/trainer/unlearn/` (γ = α = 1; our own
# code). The retain facts of 01 are split in two (`facts.split_retain`): one half trains the arms that have a
# retain term, the other half is **held out** and measures collateral damage for every arm. The paper's arms
# are reused from 02 and 03, not retrained.
#
# Reads: 01_data, 02_baselines, 03_rlcp_training

# %%
# Colab setup (does nothing elsewhere). A Colab badge opens this notebook alone in a fresh runtime: clone the study
# (the committed results of the earlier notebooks come with it), install what Colab lacks (pyproject.toml leaves
# torch unpinned, so Colab keeps its own), and work inside the clone. Earlier results this notebook needs and the
# clone lacks are built by the pipeline when the notebook starts. RLCP_COLAB=1 runs this cell outside Colab too.
import os
import subprocess
import sys

# (Not in the kernels the pipeline starts inside the clone: they are already there.)
if ("google.colab" in sys.modules or os.environ.get("RLCP_COLAB") == "1") and os.environ.get("RLCP_PIPELINE_RUN") != "1":
    import tomllib

    # names with a leading underscore: notebook.start takes every other plain name here for a parameter;
    # the clone's place is kept in the environment, so running this cell again finds it from any folder
    _checkout = os.environ.setdefault("RLCP_CHECKOUT", os.path.abspath("rlcp"))
    if not os.path.isdir(os.path.join(_checkout, ".git")):
        _repository = os.environ.get("RLCP_REPOSITORY", "https://github.com/rlcp-study/rlcp")
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", _repository, _checkout], check=True)
    with open(os.path.join(_checkout, "pyproject.toml"), "rb") as _file:
        _needs = tomllib.load(_file)["project"]["dependencies"]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *_needs], check=True)
    subprocess.run([sys.executable, "-m", "rlcp_utils.core.model"], cwd=_checkout, check=True)  # the offline model
    sys.path.insert(0, _checkout)  # this kernel, the pipeline and its kernels all import the clone's rlcp_utils
    os.environ["PYTHONPATH"] = _checkout
    os.chdir(os.path.join(_checkout, "notebooks"))
    _commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_checkout, capture_output=True, text=True)
    print(f"working in {_checkout} at commit {_commit.stdout.strip()}")

# %% tags=["parameters"]
profile: str = "default"  # params/<profile>.yaml (default: offline SmolLM2 on CPU; paper: Qwen2.5-0.5B on a GPU)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlcp_utils.core import config, model, notebook, outputs, plots, results
from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate
from rlcp_utils.methods import registry
from rlcp_utils.training import dispatch, jobs, loop

P = notebook.start("08_unlearning", globals())
study = facts.load_study_data(P)
retain_train, retain_heldout = facts.split_retain(study.retain)
PAPER_ARMS = [a for a in registry.PAPER_ARMS if a in P["arms"]]
BENCH_ARMS = list(P["benchmark_arms"])
TRAINED = PAPER_ARMS + BENCH_ARMS
K = len(study.targets)
print(f"{K} targets; retain facts: {len(retain_train)} for training, {len(retain_heldout)} held out; "
      f"training seeds {P['seeds']}; paper arms {PAPER_ARMS} (from 02/03), benchmark arms {BENCH_ARMS}")
pd.DataFrame({arm: vars(registry.method(arm).weights(P)) for arm in TRAINED}).T

# %% [markdown]
# ## The field's methods, as implemented
# Each is one loss function of a training step (`methods.common.Step`), trained by the same loop as the
# paper's arms (03 shows RLCP's). NPO's loss is the one of open-unlearning written with a softplus; the
# bounded unlikelihood is Welleck et al.'s −log(1 − p), which stops pushing once the answer is unlikely, where
# the paper's −CE keeps growing (in 03 it reaches about 130 nats).
#
# <!-- shows: rlcp_utils.methods.grad_diff.grad_diff_loss -->
# ```python
# def grad_diff_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
#     out = no_context_pass(model, step, full_logits=False)
#     h = probe_state(out, step)
#     labels = step.labels(h.device)
#     l_probe, probe_logits = observer_probe(probe, h, labels)
#     ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)
#     l_forget = -ce_no                                   # ascent on the forget NLL
#     total = l_probe + l_forget
#     l_retain = retain_ce(model, *retain_pass(model, step), step)
#     total = total + w.retain_weight * l_retain
#     return {"total": total, "l_probe": l_probe.detach(), "l_unlikelihood": l_forget, "ce_no_context": ce_no,
#             "l_retain": l_retain, "adversary_acc": probe_accuracy(probe_logits, labels)}
# ```
#
# <!-- shows: rlcp_utils.methods.npo.npo_loss -->
# ```python
# def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
#     """NPO (Zhang et al. 2024): (2/beta) * log(1 + (P_theta/P_ref)^beta), averaged over the batch; logp and
#     ref_logp are the answers' sequence log-probabilities (summed over tokens). Equals (2/beta)*log 2 at
#     P_theta = P_ref and -> 0 as P_theta -> 0. open-unlearning writes it as -(2/beta)*logsigmoid(-beta*ratio)."""
#     return (2.0 / beta) * F.softplus(beta * (logp - ref_logp)).mean()
# ```
#
# <!-- shows: rlcp_utils.methods.npo.npo_method_loss -->
# ```python
# def npo_method_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
#     out = no_context_pass(model, step, full_logits=False)
#     h = probe_state(out, step)
#     labels = step.labels(h.device)
#     l_probe, probe_logits = observer_probe(probe, h, labels)
#     ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)
#     logp = torch.stack([lp.sum() for lp in answer_token_logp(out.logits, out.ids, out.prompt_lens, step.answer_lens)])
#     l_npo = npo_loss(logp, step.forget_ref_logp.to(h.device), w.beta)
#     l_retain = retain_ce(model, *retain_pass(model, step), step)
#     total = l_probe + l_npo + w.retain_weight * l_retain
#     return {"total": total, "l_probe": l_probe.detach(), "l_unlikelihood": l_npo, "ce_no_context": ce_no,
#             "l_retain": l_retain, "adversary_acc": probe_accuracy(probe_logits, labels)}
# ```
#
# <!-- shows: rlcp_utils.methods.rmu.rmu_loss -->
# ```python
# def rmu_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
#     out = no_context_pass(model, step, full_logits=False)
#     h = probe_state(out, step)
#     labels = step.labels(h.device)
#     l_probe, probe_logits = observer_probe(probe, h, labels)
#     ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)  # logged: is the answer gone?
#     state = out.hidden_states[step.rmu_layer]
#     device = state.device
#     l_rmu = masked_state_mse(state, step.rmu_target.to(device).expand_as(state), from_city_mask(step.items, state.shape[1], device))
#     base, _ = retain_pass(model, step, output_hidden_states=True)
#     retain_state = base.hidden_states[step.rmu_layer]
#     frozen = torch.zeros(retain_state.shape, device=device)
#     for j, st in enumerate(step.retain_ref_states):
#         frozen[j, : st.shape[0]] = st.to(device)
#     l_rmu_retain = masked_state_mse(retain_state, frozen, from_city_mask(step.retain, retain_state.shape[1], device))
#     total = l_probe + l_rmu + w.retain_weight * l_rmu_retain
#     return {"total": total, "l_probe": l_probe.detach(), "ce_no_context": ce_no, "l_rmu": l_rmu,
#             "l_rmu_retain": l_rmu_retain, "adversary_acc": probe_accuracy(probe_logits, labels)}
# ```
#
# <!-- shows: rlcp_utils.methods.selective_rlcp.bounded_unlikelihood -->
# ```python
# def bounded_unlikelihood(token_logp: list[torch.Tensor]) -> torch.Tensor:
#     """Mean over answer tokens of -log(1 - p), then over the batch: large while the model still says the
#     answer, -> 0 as p -> 0 (so, unlike -CE, it stops pushing once the answer is unlikely)."""
#     # log(1 - p) = log(-expm1(log p)); clamp keeps p = 1 finite
#     return torch.stack([-torch.log(-torch.expm1(lp.clamp(max=-1e-6))).mean() for lp in token_logp]).mean()
# ```
#
# <!-- shows: rlcp_utils.methods.selective_rlcp.selective_rlcp_loss -->
# ```python
# def selective_rlcp_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
#     out = no_context_pass(model, step, full_logits=w.lambda_kl > 0)
#     h = probe_state(out, step)
#     labels = step.labels(h.device)
#     probe_logits = probe(gradient_reversal(h, step.alpha))
#     l_probe = F.cross_entropy(probe_logits, labels)
#     total = w.lambda_adv * l_probe
#     ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)
#     l_bounded = bounded_unlikelihood(answer_token_logp(out.logits, out.ids, out.prompt_lens, step.answer_lens))
#     l_retain = retain_ce(model, *retain_pass(model, step), step)
#     l_forget = w.forget_weight * l_bounded
#     total = total + l_forget + w.retain_weight * l_retain
#     l_kl = kl_term(out, step) if w.lambda_kl > 0 else torch.zeros((), device=h.device)
#     total = total + w.lambda_kl * l_kl
#     l_rag = rag_ce(model, step)
#     total = total + w.lambda_rag * l_rag
#     return {"total": total, "l_rag": l_rag, "l_probe": l_probe.detach(), "l_unlikelihood": l_forget, "ce_no_context": ce_no,
#             "l_kl": l_kl, "l_retain": l_retain, "adversary_acc": probe_accuracy(probe_logits, labels)}
# ```

# %% [markdown]
# ## Inputs fixed before training
# The forget items are the paper's (every target under every training template, x_no and x_rag); the retain
# items are the training half of the retain facts under the same templates. From the frozen model, once: the
# KL reference (selective RLCP), the answers' log-probabilities (NPO's P_ref) and RMU's states.
# **RMU's layer and coefficient, by a stated rule** (`data.inputs.rmu_layer_of`, `data.inputs.field_inputs`): the block
# at RMU's reference depth (block 7 of 32), and c = `rmu_steering_multiple` × the frozen model's mean state
# norm there on the forget prompts (adaptive RMU's form), so that c·u dominates the state.

# %%
reference, tok = model.load_for(P)
config.check_probe_layer(P, reference.config.num_hidden_layers)
inputs = jobs.study_inputs(P, study, reference, tok, benchmark=True)
items, field = inputs.items, inputs.field
del reference
steps = len(loop.epoch_schedule(items, K, P["epochs"], P["batch_size"], P["seeds"][0]))
print(f"{len(items)} forget items, {len(field.retain_items)} retain items; {steps} steps per job (batch {P['batch_size']}, "
      f"plus a retain batch of {P['batch_size']} per step where the arm has a retain term); RMU: hidden_states[{field.rmu_layer}] "
      f"(output of block {field.rmu_layer - 1}), c = {field.rmu_coefficient:.1f}")

# %% [markdown]
# ## Train and evaluate each (arm, seed)
# Jobs as in 02 and 03 (`rlcp_utils/training/jobs.py`): each (arm, seed) is trained, evaluated on every fact set and
# split, and saved on its own; a rerun loads finished jobs. The paper's arms are loaded from their jobs.

# %%
runs = dispatch.run_arms(P, TRAINED, study, inputs, desc="08_unlearning")
pd.DataFrame([{"arm": arm, "seed": seed, "trained now": j["trained"], "training minutes": round(j["seconds"] / 60, 1)}
              for arm, r in runs.items() for seed, j in r["jobs"].items()])

# %% [markdown]
# ## Training curves
# The benchmark arms' logged terms per step (rolling mean over 5 steps), every training seed: the target
# answer's CE without context (higher = forgotten), the CE of the training retain answers, the total loss.

# %%
logs = {(arm, seed): jobs.train_log(P, arm, seed) for arm in BENCH_ARMS for seed in P["seeds"]}
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
for (arm, seed), log in logs.items():
    color = plots.ARM_COLORS.get(arm)
    label = arm if seed == P["seeds"][0] else None
    axes[0].plot(log.step, log.ce_no_context.rolling(5, min_periods=1).mean(), color=color, lw=1, label=label)
    axes[1].plot(log.step, log.l_retain.rolling(5, min_periods=1).mean(), color=color, lw=1, label=label)
    axes[2].plot(log.step, log.total.rolling(5, min_periods=1).mean(), color=color, lw=1, label=label)
axes[0].set(title="CE of the target answer, no context", xlabel="step", yscale="log")
axes[1].set(title="CE of the training retain answers", xlabel="step")
axes[2].set(title="total loss", xlabel="step")
axes[0].legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "08_training_curves")
plt.show()

# %% [markdown]
# ## Forgetting and collateral damage, every seed
# From each job's per-prompt scores: the targets, the training half of the retain facts and the held-out
# half, per template split. Mean over seeds and facts with the two-level bootstrap interval of 02/03 (seeds,
# then facts); chance is the deranged-answer rate measured on all retain facts (02/03). The original is one
# untrained model: its interval is over facts.

# %%
HELD, TRAIN_RETAIN = {r["city"] for r in retain_heldout}, {r["city"] for r in retain_train}


def split_retain_rows(per_item: pd.DataFrame) -> pd.DataFrame:
    """The retain rows of a per-prompt table, renamed by half (retain_train / retain_heldout)."""
    r = per_item[per_item.facts == "retain"].copy()
    r["facts"] = np.where(r.city.isin(HELD), "retain_heldout", "retain_train")
    return r


def chance_rows(seed_rows: pd.DataFrame) -> pd.DataFrame:
    """The retain chance levels (all retain facts) under both halves' metric names."""
    r = seed_rows[seed_rows.metric.str.startswith("retain.")]
    return pd.concat([r.assign(metric=r.metric.str.replace("retain.", f"{half}.", regex=False))
                      for half in ["retain_train", "retain_heldout"]])


bench_rows = []
for arm, run in runs.items():
    per_item = pd.concat([j["per_item"] for j in run["jobs"].values()], ignore_index=True)
    seed_rows = pd.DataFrame([r for r in run["rows"] if r["seed"] != "all"])
    bench_rows += evaluate.summarize_seeds(split_retain_rows(per_item), chance_rows(seed_rows), P["n_bootstrap"], P["seed"])
original_rows, original_items = jobs.original_scores(P)  # the study's fact draw, on which every benchmark arm trains
original_items = original_items.assign(seed=0)
for r in evaluate.summarize_seeds(split_retain_rows(original_items), chance_rows(original_rows), P["n_bootstrap"], P["seed"]):
    bench_rows.append({**r, "seed": "all", "n_seeds": 0, "interval": evaluate.FACT_INTERVAL})
record_rows = [r for arm in BENCH_ARMS for r in runs[arm]["rows"]] + bench_rows
results.write(P, "08_unlearning", record_rows)
print(f"{len(record_rows)} rows written to results/08_unlearning.csv")

# %% [markdown]
# ## Is the forgetting targeted?
# Every arm, mean over training seeds and facts [95% two-level interval] (the original: over facts): the
# targets without context, the held-out retain facts (collateral damage), the training half of the retain
# facts (which only the arms with a retain term see) and the targets with context. The targeted forgetting
# the field asks for is a low first column next to the original's numbers in the others.

# %%
SHOWN = {"targets.no_context_recall.heldout": "targets, no context", "retain_heldout.no_context_recall.heldout": "held-out retain",
         "retain_train.no_context_recall.heldout": "training retain", "targets.rag_accuracy.heldout": "targets, RAG"}
view = results.summary(results.load(P), results.STUDY_DRAW)  # the benchmark arms train on the study's draw only


def shown(arm: str, key: str) -> str:
    r = view.loc[(arm, key)]
    return f"{r.value:.1%}" + (f" [{r.ci_low:.0%}, {r.ci_high:.0%}]" if not pd.isna(r.ci_low) else "")


pd.DataFrame({label: [shown(arm, key) for arm in ["original"] + TRAINED] for key, label in SHOWN.items()}, index=["original"] + TRAINED)
