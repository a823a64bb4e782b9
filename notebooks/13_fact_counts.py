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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/13_fact_counts.ipynb)
#
# # 13 · More facts (the paper's limitation 2), measured
#
# The paper forgets 15 facts in one model and lists scale as a limitation: more facts, larger models. This
# notebook runs the part a 2-core CPU can: RLCP with `fact_counts` target facts besides 03's 15, through the one
# training loop, with the study's rules (chance level, n, intervals). Does RLCP still forget its targets and
# answer from context, and what happens to the facts it was not asked to forget?
#
# **Seeds.** Every fact count is trained with `fact_count_seeds` (one seed on the default profile, to stay within
# the budget): its intervals are over facts only, so a difference between settings smaller than the seed range
# of 03's RLCP (the row "rlcp (03)", all of 03's seeds) is not evidence. The fresh probe uses each setting's first
# seed, whose weights are kept: n = 1 seed.
#
# Reads: 01_data, 03_rlcp_training, 04_probing

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
import json
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from rlcp_utils.core import config, model, notebook, outputs, results
from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate, probing
from rlcp_utils.study import sweeps
from rlcp_utils.study.sweeps import fmt
from rlcp_utils.training import dispatch, jobs

P = notebook.start("13_fact_counts", globals())
NB = "13_fact_counts"
study = facts.load_study_data(P)
retain_train, retain_heldout = facts.split_retain(study.retain)
K = len(study.targets)
reference, tok = model.load_for(P)
config.check_probe_layer(P, reference.config.num_hidden_layers)
del reference  # only its tokenizer is needed here; each setting's model is loaded when it is probed
record_rows: list[dict] = []
print(f"{K} targets; retain facts: {len(retain_train)} training half, {len(retain_heldout)} held out; 03's RLCP seeds {P['seeds']}")

# %% [markdown]
# ## The settings
# RLCP with `fact_counts` target facts besides 03's 15, same settings and epochs (so more steps: one epoch
# shows every fact once). The extra facts are the training half of the retain facts (01 keeps 45 known
# facts with one known city per country among them; the other known cities are 01's probe cities), so
# collateral damage is measured on the held-out half, which no setting trains on. 45 target facts would
# need more screened facts than 01 keeps on this model: the largest count is 15 + the training half.
# Per setting: forgetting of its targets and of the first targets that every setting trains on (the first
# min(5, n_targets, smallest fact count) of 03's targets, the same facts in every row), held-out
# retain recall, RAG accuracy, the adversary's accuracy at l*, a fresh country probe trained on 01's probe
# cities at l* (city and last token, tested on the setting's targets among the 15 of 03; chance 1/15), and
# training time. The model-size axis needs the paper profile on a GPU and is not covered here.

# %%
pool = [dict(f) for f in study.targets + retain_train]
too_many = [n for n in P["fact_counts"] if n > len(pool)]
if too_many:
    raise RuntimeError(f"fact_counts {too_many} exceed the {len(pool)} facts available (targets + training retain half); "
                       "lower them in the profile or screen more facts in 01 (n_retain)")
# one dispatch: 03's RLCP (every seed) and each setting's seeds; no TrainingInputs are passed, so a job that trains
# builds its own (one setting's frozen-model cache in memory at a time) and a finished one needs none
count_jobs, count_targets = sweeps.rlcp_jobs(P, study, P["seeds"]), {}
for n in sorted(P["fact_counts"]):
    name = f"rlcp_{n}facts"
    count_targets[name] = [{**f, "label": i} for i, f in enumerate(pool[:n])]
    study_n = replace(study, targets=count_targets[name], retain=retain_heldout)
    Pv = sweeps.sweep_profile(P, P["fact_count_seeds"])
    count_jobs += [jobs.Job(Pv, "rlcp", seed, study_n, name=name, notebook=NB) for seed in Pv["seeds"]]
count_runs = sweeps.by_setting(count_jobs, dispatch.run_jobs(count_jobs, NB))
rlcp_runs, count_summary = count_runs.pop("rlcp"), {}  # 03's RLCP is the setting with the profile's n_targets
for name in count_targets:
    rows, count_summary[name] = sweeps.job_rows(P, count_runs[name])
    record_rows += rows
held = {r["city"] for r in retain_heldout}
N_SHARED = min(5, K, *P["fact_counts"])  # the first targets, trained by every setting
shared = {t["city"] for t in study.targets[:N_SHARED]}
count_runs_all = {"rlcp": rlcp_runs, **count_runs}
n_facts_of = {"rlcp": K, **{name: len(t) for name, t in count_targets.items()}}


def count_extra(per_item: pd.DataFrame) -> pd.DataFrame:
    """The held-out retain facts (for 03's jobs, the held-out half of the retain rows) and the shared first targets."""
    retain_rows = per_item[(per_item.facts == "retain") & per_item.city.isin(held)].assign(facts="retain_heldout")
    first_rows = per_item[(per_item.facts == "targets") & per_item.city.isin(shared)].assign(facts="shared_targets")
    return pd.concat([retain_rows, first_rows])


count_table, count_view = [], {}
for name in sorted(count_runs_all, key=n_facts_of.get):
    runs_n = count_runs_all[name]
    per_item = pd.concat([j["per_item"] for j in runs_n.values()], ignore_index=True)
    seed_rows = pd.DataFrame([r for j in runs_n.values() for r in j["rows"]])
    extra = evaluate.summarize_seeds(count_extra(per_item), seed_rows, P["n_bootstrap"], P["seed"])
    if name in count_runs:
        record_rows += extra
    count_view[name] = pd.DataFrame(evaluate.summarize_seeds(per_item[per_item.facts == "targets"], seed_rows, P["n_bootstrap"], P["seed"])
                                    + extra).set_index("metric")
    cell = lambda m: fmt(*count_view[name].loc[m, ["value", "ci_low", "ci_high"]]) if m in count_view[name].index else "–"
    count_table.append({"setting": name + (" (03)" if name == "rlcp" else ""), "target facts": n_facts_of[name], "seeds": len(runs_n),
                        "steps": json.loads((jobs.job_dir(P, name, list(runs_n)[0]) / "job.json").read_text())["steps"],
                        "training minutes (mean)": round(np.mean([j["seconds"] for j in runs_n.values()]) / 60, 1),
                        "its targets, no context (held-out wordings)": cell("targets.no_context_recall.heldout"),
                        f"first {N_SHARED} targets, no context (held-out wordings)": cell("shared_targets.no_context_recall.heldout"),
                        "held-out retain, no context": cell("retain_heldout.no_context_recall.heldout"),
                        "its targets, RAG (held-out wordings)": cell("targets.rag_accuracy.heldout"),
                        "adversary at l* (chance 1/n)": cell("targets.adversary_probe_accuracy.heldout")})

# %% [markdown]
# ## A fresh country probe
# 04's country probe (`probing.country_probe_on_targets`, the rule 04 and 10 use): a logistic-regression probe
# trained at l* on the states of 01's probe cities (other known cities of the 15 target countries, less one held
# out per country, in `n_probe_seeds` splits) under every wording, tested on the setting's targets among the 15,
# for the first seed's model of each setting. The original and 03's RLCP (all 15 targets) are 04's numbers, read
# from the record.

# %%
probe_prompts = probing.country_probe_prompts(tok, study)
PROBE = "heldout_probe_accuracy.country_target.linear"  # 04's metric, one rule for every model (04, 10, here)


def fresh_probe(lm, forgotten: set[str]) -> dict[str, pd.Series]:
    """Per-target accuracy (over splits and prompts) of the country probe at the city and the last token, for the
    targets in `forgotten`."""
    t = probing.country_probe_of_model(lm, probe_prompts, P["probe_layer"], P["n_probe_seeds"], P["seed"], P["eval_batch_size"],
                                       tok.pad_token_id)
    t = t[t.city.isin(forgotten)]
    return {pos: t[t.position == pos].groupby("city").correct.mean() for pos in ["city", "last"]}


probed_in_04 = results.summary(results.load(P), results.STUDY_DRAW)  # the original and 03's RLCP, as 04 measured them
for row_, name in zip(count_table, sorted(count_runs_all, key=n_facts_of.get)):
    if name != "rlcp":
        study_n = replace(study, targets=count_targets[name], retain=retain_heldout)
        lm = jobs.load_arm(sweeps.sweep_profile(P, P["fact_count_seeds"]), "rlcp", study_n, name=name)[0]
        probed = fresh_probe(lm, {t["city"] for t in count_targets[name]} & {t["city"] for t in study.targets})
        del lm
    for pos in ["city", "last"]:
        if name == "rlcp":
            r, n = probed_in_04.loc[("rlcp", f"{PROBE}.{pos}")], K
        else:
            r = sweeps.bootstrap_row(P, name, str(P["fact_count_seeds"][0]), f"{PROBE}.{pos}", probed[pos], "facts", 1, chance=1 / K)
            record_rows.append(r)
            r, n = pd.Series(r), len(probed[pos])
        row_[f"fresh probe, {pos} token, l* (chance {1 / K:.0%})"] = fmt(r["value"], r["ci_low"], r["ci_high"]) + f" (n = {n})"
orig_probe = {pos: probed_in_04.loc[("original", f"{PROBE}.{pos}")].value for pos in ["city", "last"]}
count_table = pd.DataFrame(count_table)
outputs.write_table(P, "13_fact_counts", count_table)
display(Markdown(f"The original model: fresh probe {orig_probe['city']:.0%} at the city token and {orig_probe['last']:.0%} at the "
                 f"last token ({K} targets). Recall: mean over seeds and facts [95% two-level interval]; chance ≈ 0."))
count_table

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
ns = count_table["target facts"].to_numpy()
summaries = [count_view[name] for name in sorted(count_runs_all, key=n_facts_of.get)]
for ax, (m, title) in zip(axes[:2], [("targets.no_context_recall.heldout", "its targets, no context"),
                                      ("retain_heldout.no_context_recall.heldout", "held-out retain facts, no context")]):
    v = [view_.loc[m] for view_ in summaries]
    ax.errorbar(ns, [r.value for r in v], yerr=[[r.value - r.ci_low for r in v], [r.ci_high - r.value for r in v]], fmt="o-", capsize=3)
    ax.set(title=title, xlabel="target facts", ylim=(-0.05, 1.05))
axes[2].plot(ns, count_table["training minutes (mean)"], "o-")
axes[2].set(title="training minutes (this machine)", xlabel="target facts")
fig.tight_layout()
outputs.save_figure(P, fig, "13_fact_counts")
plt.show()

# %%
results.write(P, NB, record_rows)
print(f"{len(record_rows)} rows written to the results record")
