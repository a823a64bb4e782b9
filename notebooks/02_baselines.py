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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/02_baselines.ipynb)
#
# # 02 · Baselines: Just-RAG (Group B) and unlikelihood-only (Group C)
#
# Two controls for RLCP, trained with the same loop, data and budget (`rlcp_utils/training/loop.py`); they
# differ from RLCP only by their loss (`rlcp_utils/methods/`, shown below):
#
# | arm | L_RAG | λ_adv·L_P (GRL) | L_L = −w·CE(no context) | λ_KL·KL |
# |---|---|---|---|---|
# | **just_rag** (B) | ✓ | 0 | 0 | ✓ |
# | **unlikelihood** (C) | 0 | 0 | ✓ | ✓ |
# | rlcp (03) | ✓ | ✓ | ✓ | ✓ |
#
# B asks whether ordinary fine-tuning on (question, context) → answer forgets by itself (the paper: it does
# not; its probe still reads the fact at 88.5%). C asks what suppression does without the survival stream.
# Both arms also train a linear probe at layer l* on the detached hidden state (an *observer*: it sends no
# gradient to the model) so that the paper's "probe accuracy" exists for them too.
#
# Every arm is trained once per **training seed** (`seeds` in the profile; the seed orders the batches and
# initialises the probe) on every **fact draw** (`fact_draws`: independent draws of targets and retain facts from
# 01's screening; draw 0 is the study's, the one every later analysis reads). Each (arm, draw, seed) is an
# independent job (`rlcp_utils/training/jobs.py`).
#
# Reads: 01_data

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
import pandas as pd

from rlcp_utils.core import config, model, notebook, outputs, plots, results
from rlcp_utils.data import facts
from rlcp_utils.methods import registry
from rlcp_utils.training import dispatch, jobs, loop

P = notebook.start("02_baselines", globals())
studies = facts.load_study_draws(P)
study = studies[0]  # the study's draw
ARMS = [a for a in P["arms"] if a != "rlcp"]
print(f"arms {ARMS}, training seeds {P['seeds']}, fact draws {len(studies)}, {len(study.targets)} targets, "
      f"prompt format {study.prompt_format!r}")
pd.DataFrame({arm: vars(registry.method(arm).weights(P)) for arm in ARMS})

# %% [markdown]
# ## The two losses, as implemented
# Each is one function of a training step (`methods.common.Step`: the batch of target items, the frozen
# model's KL reference, the GRL strength); the loop (`training/loop.py`) is the same for every arm. Both read
# the probe's state through `observer_probe`, which detaches it: the probe learns, the model does not see it.
#
# <!-- shows: rlcp_utils.methods.just_rag.just_rag_loss -->
# ```python
# def just_rag_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
#     out = no_context_pass(model, step, full_logits=w.lambda_kl > 0)
#     h = probe_state(out, step)
#     labels = step.labels(h.device)
#     l_probe, probe_logits = observer_probe(probe, h, labels)
#     ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)  # logged: recall is kept
#     total = l_probe
#     l_kl = kl_term(out, step) if w.lambda_kl > 0 else torch.zeros((), device=h.device)
#     total = total + w.lambda_kl * l_kl
#     l_rag = rag_ce(model, step)
#     total = total + w.lambda_rag * l_rag
#     return {"total": total, "l_rag": l_rag, "l_probe": l_probe.detach(), "ce_no_context": ce_no, "l_kl": l_kl,
#             "adversary_acc": probe_accuracy(probe_logits, labels)}
# ```
#
# <!-- shows: rlcp_utils.methods.unlikelihood.unlikelihood_loss -->
# ```python
# def unlikelihood_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
#     out = no_context_pass(model, step, full_logits=w.lambda_kl > 0)
#     h = probe_state(out, step)
#     labels = step.labels(h.device)
#     l_probe, probe_logits = observer_probe(probe, h, labels)
#     ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)
#     l_l = -w.unlikelihood_weight * ce_no
#     total = l_probe + l_l
#     l_kl = kl_term(out, step) if w.lambda_kl > 0 else torch.zeros((), device=h.device)
#     total = total + w.lambda_kl * l_kl
#     return {"total": total, "l_probe": l_probe.detach(), "l_unlikelihood": l_l, "ce_no_context": ce_no, "l_kl": l_kl,
#             "adversary_acc": probe_accuracy(probe_logits, labels)}
# ```

# %% [markdown]
# ## Training inputs and the frozen reference
# Every target under each training template gives one x_no (question) and one x_rag (evidence + question),
# both followed by the answer. Each epoch shows every fact once, under the next of its templates. The
# frozen reference's log-probabilities on these fixed x_no inputs are computed **once** here: the KL term
# then costs no extra forward pass per step.

# %%
reference, tok = model.load_for(P)
config.check_probe_layer(P, reference.config.num_hidden_layers)
inputs = jobs.study_inputs(P, study, reference, tok)
del reference
steps = len(loop.epoch_schedule(inputs.items, len(study.targets), P["epochs"], P["batch_size"], P["seeds"][0]))
print(f"{len(inputs.items)} training items, {P['epochs']} epochs x batch {P['batch_size']} = {steps} steps per job, "
      f"{len(ARMS) * len(P['seeds']) * len(studies)} jobs (arms x seeds x fact draws)")

# %% [markdown]
# ## Train and evaluate each (arm, fact draw, seed)
# A finished job writes its evaluation, per-prompt scores and per-step training log to
# `outputs/<profile>/jobs/<arm>/seed<k>/` (`draw<d>_seed<k>/` for the other fact draws; committed) and, for the
# study's draw, its weights to `checkpoints/<arm>/seed<k>/` (not committed), tagged with a key of every parameter
# that shapes training, the facts, the seed and the precision. A rerun with the same key loads the job's results instead of training again; an interrupted
# run loses only the job in progress; any change of settings retrains from the original model. The jobs run in
# this process unless `RLCP_EXECUTOR` sends them to subprocesses (`local`) or to a Slurm job array (`slurm`):
# `training/dispatch.py`, docs/cluster.md. Either way each job writes the same folder, read back here.

# %%
runs = dispatch.run_arms(P, ARMS, studies, inputs, desc="02_baselines")
pd.DataFrame([{"arm": arm, "fact draw": d, "seed": seed, "trained now": j["trained"], "training minutes": round(j["seconds"] / 60, 1)}
              for arm, r in runs.items() for d, by_seed in r["by_draw"].items() for seed, j in by_seed["jobs"].items()])

# %%
logs = {(arm, seed): jobs.train_log(P, arm, seed) for arm in ARMS for seed in P["seeds"]}
fig = plots.training_curves(logs, len(study.targets))
outputs.save_figure(P, fig, "02_training_curves")
plt.show()

# %% [markdown]
# ## Results
# Per seed: the mean over facts with a 95% bootstrap interval over facts. Over seeds (`seed = all`): the mean
# over seeds and facts with a two-level bootstrap interval (seeds, then facts within each drawn seed), so the
# interval includes how much the outcome moves when the same arm is trained again. Over fact draws
# (`fact_draw = all`, when there are several): the mean of the draws' means, with the draws as the outer unit of
# the bootstrap (then seeds and facts within each), so the interval also covers which facts were drawn. `chance`
# is the deranged-answer rate of the same model (1/K for the probe). The original model's numbers come from 01_data.

# %%
rows = [r for run in runs.values() for r in run["rows"]]
results.write(P, "02_baselines", rows)
table = results.frame(rows, "02_baselines")
shown = table[~table.metric.str.contains("answer_prob")]
# each seed and the summary over seeds, per fact draw (columns: arm, draw, seed)
shown.pivot_table(index="metric", columns=["arm", "fact_draw", "seed"], values="value").round(3)

# %%
# the arms' summaries: over the fact draws where there are several, else over seeds
shown[shown.seed == "all"].pipe(lambda d: d[d.fact_draw == ("all" if len(studies) > 1 else "0")])[
    ["arm", "metric", "value", "ci_low", "ci_high", "chance", "n_units", "n_prompts", "n_seeds", "n_draws"]].round(3)
