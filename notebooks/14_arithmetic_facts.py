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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/14_arithmetic_facts.ipynb)
#
# # 14 · Facts inside the reasoning domain (the paper's limitation 1), measured
#
# The paper forgets facts (cities and their countries) that no reasoning task it measures needs, and lists
# this as a limitation: what happens when the forgotten facts are the ones a reasoning task uses? Here RLCP
# forgets multiplication facts, and we measure the multiplication facts it was asked to forget, those it was
# not, and two-step problems ("7 x 8 + 5") that need them, through the one training loop and with the study's
# rules (chance level, n, intervals).
#
# The arithmetic task (the facts, their wordings, which of them the original knows, the two-step problems and
# the original's answers) is the one notebook 12 introduces, screened by the same call
# (`sweeps.arithmetic_task`) with 12's parameters (`arith_max_factor`, `arith_addends`): a change of them
# reruns both notebooks.
#
# **Seeds.** The arms are trained with `arith_seeds` (one seed on the default profile, to stay within the
# budget): intervals are over facts only. The two-step problems use each arm's first seed: n = 1 seed.
#
# Reads: 01_data, 07_gsm8k, 12_gradient_geometry

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
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from rlcp_utils.core import config, model, notebook, outputs, plots, results
from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate
from rlcp_utils.study import sweeps
from rlcp_utils.study.sweeps import fmt
from rlcp_utils.training import dispatch, jobs

P = notebook.start("14_arithmetic_facts", globals())
NB = "14_arithmetic_facts"
study = facts.load_study_data(P)
reference, tok = model.load_for(P)
config.check_probe_layer(P, reference.config.num_hidden_layers)
record_rows: list[dict] = []

# %% [markdown]
# ## The task, screened on the original model
# Single-digit multiplication facts ("7 x 8" → "56") under seven wordings in the study's prompt format; a fact
# is *known* when the model answers it firmly on at least `known_threshold` of the training wordings (01's rule, with its
# margin `screen_margin`; `rlcp_utils/measures/screening.py`).

# %%
task = sweeps.arithmetic_task(P, study, reference, tok)
known = task.known
print(f"multiplication facts 2..{P['arith_max_factor']}: {len(task.facts)}; no-context recall on the training wordings "
      f"{task.recall.mean():.1%}; known (>= {P['known_threshold']:.0%} of the wordings, margin {P['screen_margin']}): {len(known)}")
print(f"two-step problems: {len(task.two_step)}; the original gets the product right on {task.original.product_right.mean():.1%} "
      f"and the final answer on {task.original.answer_right.mean():.1%} (chance {task.chance:.1%})")
if len(known) < P["arith_n_targets"] + 2:
    raise RuntimeError(f"only {len(known)} multiplication facts are known to {P['model']}: this notebook needs arith_n_targets "
                       f"({P['arith_n_targets']}) plus at least 2 held out; lower arith_n_targets in the profile")

# %% [markdown]
# ## Forgetting multiplication facts
# `arith_n_targets` of the known multiplication facts (seeded) become RLCP's targets, with the arithmetic
# wordings for x_no and the fact stated as evidence for x_rag; the other known facts are held out (same
# kind, never trained). Arms: RLCP and the Just-RAG control (no adversary, no unlikelihood), same settings as
# 03. Measured: (a) the targeted facts, (b) the held-out facts, no context and with the fact in the prompt,
# and (c) the two-step problems, split by whether their fact was targeted, for the original and each arm's
# first-seed model: the product stated right (the fact), the addition done right on whatever product was
# stated (the reasoning step), and the final answer right (both). Chance for a fact: the deranged-answer rate
# (02); for a two-step answer: the rate at which the final number equals another problem's (different) answer.

# %%
rng = np.random.default_rng(P["seed"])
target_idx = sorted(rng.choice(len(known), size=P["arith_n_targets"], replace=False))
arith_targets = [{**known[i], "label": k} for k, i in enumerate(target_idx)]
arith_heldout = [f for i, f in enumerate(known) if i not in set(target_idx)]
arith_q, arith_e = task.questions, task.evidences
arith_study = replace(study, targets=arith_targets, retain=arith_heldout, probe_cities=[], controls=[], questions=arith_q, evidences=arith_e)
arith_inputs = jobs.study_inputs(P, arith_study, reference, tok)
Pa = sweeps.sweep_profile(P, P["arith_seeds"])
arith_jobs = [jobs.Job(Pa, arm, seed, arith_study, name=f"arith_{arm}", notebook=NB, inputs=arith_inputs)
              for arm in ["just_rag", "rlcp"] for seed in Pa["seeds"]]
arith_runs = sweeps.by_setting(arith_jobs, dispatch.run_jobs(arith_jobs, NB))
arith_summary = {}
for name, r in arith_runs.items():
    rows, arith_summary[name] = sweeps.job_rows(P, r)
    record_rows += rows
# the original on the same sets (untrained: interval over facts)
orig_rows, orig_items = evaluate.evaluate_arm(reference, tok, "arith_original", {"targets": arith_targets, "retain": arith_heldout},
                                              arith_q, arith_e, study.prompt_format, P["eval_batch_size"], P["n_bootstrap"], P["seed"])
arith_summary["arith_original"] = pd.DataFrame(evaluate.record_rows(orig_rows, "all", 0))
record_rows += arith_summary["arith_original"].to_dict("records")
target_cities = {f["city"] for f in arith_targets}
two_step_by = {"arith_original": task.original}
for name in arith_runs:
    lm = jobs.load_arm(Pa, name.removeprefix("arith_"), arith_study, name=name)[0]
    two_step_by[name] = sweeps.solve_two_step(P, tok, task, lm)
    del lm
# the per-prompt and per-problem rows that the original's and the two-step record rows average (study/recompute.py)
outputs.write_table(P, "14_arith_original_per_item", pd.DataFrame(orig_items))
outputs.write_table(P, "14_two_step_solved", pd.concat([d.assign(arm=name) for name, d in two_step_by.items()], ignore_index=True))
arith_table = []
for name in ["arith_original"] + list(arith_runs):
    s_ = arith_summary[name].set_index("metric") if "metric" in arith_summary[name] else arith_summary[name]
    row_ = {"arm": name, "seeds": len(arith_runs.get(name, {})) or 0}
    for m, label in [("targets.no_context_recall.heldout", "(a) targeted facts, no context"),
                     ("targets.rag_accuracy.heldout", "(a) targeted facts, RAG"),
                     ("retain.no_context_recall.heldout", "(b) held-out facts, no context"),
                     ("retain.rag_accuracy.heldout", "(b) held-out facts, RAG")]:
        r = s_.loc[m]
        r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
        row_[label] = fmt(r.value, r.ci_low, r.ci_high)
    d = two_step_by[name]
    for which, mask in [("targeted", d.fact.isin(target_cities)), ("held-out", ~d.fact.isin(target_cities) & d.fact.isin({f["city"] for f in arith_heldout}))]:
        for measure in ["product_right", "step_right", "answer_right"]:
            per_fact = d[mask].groupby("fact")[measure].mean()
            r = sweeps.bootstrap_row(P, name, "all" if name == "arith_original" else str(Pa["seeds"][0]),
                                     f"two_step.{which.replace('-', '')}.{measure}", per_fact, "facts",
                                     0 if name == "arith_original" else 1,
                                     chance=task.chance if measure == "answer_right" else np.nan, n_prompts=int(mask.sum()))
            row_[f"(c) two-step on {which} facts: {measure.replace('_', ' ')}"] = fmt(r["value"], r["ci_low"], r["ci_high"])
            record_rows.append(r)
    arith_table.append(row_)
arith_table = pd.DataFrame(arith_table)
outputs.write_table(P, "14_arithmetic", arith_table)
display(Markdown(f"{len(arith_targets)} targeted facts, {len(arith_heldout)} held-out known facts; "
                 f"{P['arith_addends']} two-step problems per fact; chance of a two-step answer {task.chance:.1%}."))
arith_table.T

# %%
fig, ax = plt.subplots(figsize=(8, 3.8))
cols = [c for c in arith_table.columns if c.startswith("(")]
vals = np.array([[float(str(v).split("%")[0]) / 100 for v in arith_table[c]] for c in cols])
for j, name in enumerate(arith_table.arm):
    ax.bar(np.arange(len(cols)) + (j - 1) * 0.27, vals[:, j], width=0.27, label=name,
           color=plots.ARM_COLORS.get(name.removeprefix("arith_"), "0.5"))
ax.set_xticks(np.arange(len(cols)), [c.replace(": ", ":\n") for c in cols], rotation=60, ha="right", fontsize=7)
ax.set(ylabel="accuracy", ylim=(0, 1.05), title="Forgetting multiplication facts: the facts and the problems that use them")
ax.legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "14_arithmetic")
plt.show()

# %%
results.write(P, NB, record_rows)
print(f"{len(record_rows)} rows written to the results record")
