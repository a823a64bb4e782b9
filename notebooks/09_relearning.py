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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/09_relearning.ipynb)
#
# # 09 · Does the knowledge come back? Relearning and quantization attacks on the unlearned models
#
# A method that only hides a fact gives it back after a little fine-tuning on *related* facts; a method that
# removed it does not (Deeb & Roger 2024; Hu et al. 2024). This notebook attacks the first training seed's
# model of every arm of 08 (the paper's arms and the benchmark's) in three ways:
#
# - **Relearning** on held-out folds: `relearn_folds` folds of the targets; for each, fine-tune with plain CE on the
#   *other* folds' no-context training items (training's learning rate and batch size) and test the held-out fold,
#   never shown, on every no-context template after each budget in `relearn_steps`. recovery = (after − unlearned)
#   ÷ (original − unlearned) per fact, leaving out facts the arm did not forget (original − unlearned < 0.2). The
#   original's recall is read from 01's per-prompt rows (the same prompts), not measured again.
# - **Benign relearning**: as many steps on unrelated text (other GSM8K reference solutions: the `lm_loss_texts`
#   problems before 10's loss sample), then the targets' recall.
# - **Quantization** (Zhang et al. 2025): no training. Every model is stored the way our offline model ships (GGUF:
#   block weights in 4 bits, embedding in 8), read back in Q4_1 (shipped), Q4_0 and Q8_0 and scored like the arm.
#   Unlearning that moves the weights by less than a quantization step is rounded away.
#
# Weights are kept for the first training seed only (0.5 GB per model): one model per arm, intervals over facts.
#
# Reads: 01_data, 02_baselines, 03_rlcp_training, 08_unlearning

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
import hashlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlcp_utils.core import cache, model, notebook, outputs, plots, results
from rlcp_utils.data import facts
from rlcp_utils.data.inputs import make_train_items
from rlcp_utils.measures import evaluate, gsm8k, quantization, unlearning
from rlcp_utils.methods import registry
from rlcp_utils.training import jobs

P = notebook.start("09_relearning", globals())
study = facts.load_study_data(P)
TRAINED = [a for a in registry.PAPER_ARMS if a in P["arms"]] + list(P["benchmark_arms"])
K = len(study.targets)
reference, tok = model.load_for(P)
del reference  # the prompts need the tokenizer; each model is loaded when its table is computed
items = make_train_items(tok, study.targets, study.questions, study.evidences, study.prompt_format)  # 08's forget items
no_ctx_items = facts.build_items(tok, study.targets, study.questions, study.prompt_format)
problems = gsm8k.load_problems()
benign_texts = [p["question"] + "\n" + p["solution"] for p in problems[-2 * P["lm_loss_texts"]:-P["lm_loss_texts"]]]
benign_ids = unlearning.text_ids(tok, benign_texts)
folds = unlearning.relearn_folds(K, P["relearn_folds"], P["seed"])
print(f"arms {TRAINED} (training seed {P['seeds'][0]}); relearning folds {folds}, budgets {P['relearn_steps']} steps; "
      f"{len(benign_ids)} GSM8K texts for benign relearning")

# %% [markdown]
# ## The attacks, one cached table per model
# Each arm's table (greedy correctness of every no-context prompt of the tested targets: its held-out fold after each
# budget, one fine-tuned copy per fold; all targets after benign fine-tuning) is cached in `analyses/09_relearning/`
# under its key (parameters, the model's job key, 01's data, the measures' code).

# %%
NOTEBOOK = "09_relearning"
READS = ["model", "seed", "eval_batch_size", "learning_rate", "batch_size", "relearn_folds", "relearn_steps", "lm_loss_texts"]
CODE = ["rlcp_utils.measures.unlearning", "rlcp_utils.measures.evaluate", "rlcp_utils.measures.gsm8k",
        "rlcp_utils.data.facts", "rlcp_utils.data.inputs", "rlcp_utils.core.model"]
DATA = {f: hashlib.sha256((P.output_dir / "data" / f).read_bytes()).hexdigest()[:16]
        for f in ["templates.json", "targets.jsonl", "retain.jsonl", "country_probe_cities.jsonl"]}


def recall_items(lm, fact_ids: list[int]) -> pd.DataFrame:
    """No-context greedy correctness of the given targets over every template, per prompt."""
    its = [i for i in no_ctx_items if i["fact"] in set(fact_ids)]
    s = evaluate.score_answers(lm, [i["prompt_ids"] for i in its], [i["answer_ids"] for i in its], P["eval_batch_size"], tok.pad_token_id)
    return pd.DataFrame({"fact": [i["fact"] for i in its], "question_id": [i["question_id"] for i in its], "correct": s["greedy_correct"]})


def attacks(lm) -> pd.DataFrame:
    """Relearning on each fold's complement (the fold tested after each budget), then benign relearning."""
    parts = []
    for k, fold in enumerate(folds):
        after = unlearning.relearn(lm, unlearning.relearn_items(items, fold), P["relearn_steps"],
                                   lambda m, fold=fold: recall_items(m, fold), tok.pad_token_id,
                                   P["learning_rate"], P["batch_size"], P["seed"] + k)
        parts += [d.assign(attack="relearn", fold=k, budget=budget) for budget, d in after.items()]
    benign = unlearning.benign_relearn(lm, benign_ids, max(P["relearn_steps"]), lambda m: recall_items(m, range(K)),
                                       tok.pad_token_id, P["learning_rate"], P["batch_size"], P["seed"])
    return pd.concat(parts + [benign.assign(attack="benign", fold=-1, budget=max(P["relearn_steps"]))], ignore_index=True)


def measured(arm: str) -> pd.DataFrame:
    model_key = "original" if arm == "original" else jobs.job_key(P, arm, P["seeds"][0], study)
    key = {"model": model_key, "precision": model.precision_of(P), "params": {k: P[k] for k in READS}, "data": DATA}

    table = cache.cached_table(P, NOTEBOOK, arm, key, lambda: attacks(jobs.load_arm(P, arm, study)[0]), CODE)
    print(f"measured {arm}")
    return table


def original_recall() -> pd.DataFrame:
    """01's per-prompt no-context scores of the original on the study's targets, training and held-out templates:
    the prompts recall_items scores (checked equal on both profiles when 09 stopped measuring them itself)."""
    items = jobs.original_scores(P, 0)[1]
    t = items[(items.facts == "targets") & items.condition.str.startswith("no_context_recall.")]
    fact_of = {f["city"]: i for i, f in enumerate(study.targets)}
    return pd.DataFrame({"fact": t.city.map(fact_of), "question_id": t.question_id, "correct": t.correct.astype(bool)})


tables = {"original": original_recall(), **{arm: measured(arm) for arm in TRAINED}}
assert len(tables["original"]) == len(no_ctx_items), "01's per-prompt rows do not cover every no-context prompt of the targets"

# %% [markdown]
# ## Per fact, then the record
# A fact's recall is the mean over its prompts; the record gives means over facts with a bootstrap over facts: the
# held-out folds' recall after each budget, the recovery of forgotten facts, the recall after benign fine-tuning.

# %%
def by_fact(d: pd.DataFrame) -> pd.Series:
    return d.groupby("fact").correct.mean()


def per_fact_row(arm, metric, per_fact_values, unit="facts", n_prompts=None):
    v = np.asarray(per_fact_values, dtype=float)
    mean, lo, hi = evaluate.bootstrap_ci(v, P["n_bootstrap"], P["seed"])
    return results.analysis_row(P, arm, metric, mean, ci_low=lo, ci_high=hi, chance=np.nan, unit=unit, n_units=len(v),
                                n_prompts=n_prompts, interval=f"95% bootstrap over {unit}")


orig_recall = by_fact(tables["original"])
rows, relearned = [], {}
for arm in TRAINED:
    t = tables[arm]
    r = t[t.attack == "relearn"]
    relearned[arm] = pd.concat({budget: pd.concat([by_fact(r[(r.fold == k) & (r.budget == budget)]) for k in range(len(folds))])
                                for budget in P["relearn_steps"]}, axis=1)  # facts x budgets
    for budget in P["relearn_steps"]:
        rows.append(per_fact_row(arm, f"relearn.recall.step{budget}", relearned[arm][budget], n_prompts=len(study.questions) * K))
    top, before = max(P["relearn_steps"]), relearned[arm][min(P["relearn_steps"])]
    gap = orig_recall.loc[relearned[arm].index] - before
    forgot = gap >= 0.2
    if forgot.any():
        recovery = ((relearned[arm][top] - before) / gap)[forgot]
        rows.append(per_fact_row(arm, "relearn.recovery", recovery))
    rows.append(per_fact_row(arm, "benign_relearn.targets_recall", by_fact(t[t.attack == "benign"]), n_prompts=len(study.questions) * K))
pd.DataFrame(rows).pivot(index="arm", columns="metric", values="value").loc[TRAINED].round(3)

# %% [markdown]
# ## Recall of the held-out folds along the attack
# Each arm's mean recall of the targets after each budget (0 steps: the unlearned model), the original's (dotted)
# and after as many benign steps (×). A line that climbs back to the dotted one hid the facts; removal stays flat.

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.2))
for arm in TRAINED:
    ax.plot(P["relearn_steps"], relearned[arm].mean().to_numpy(), "o-", color=plots.ARM_COLORS[arm], label=arm)
    ax.plot([max(P["relearn_steps"])], [by_fact(tables[arm][tables[arm].attack == "benign"]).mean()], "x",
            color=plots.ARM_COLORS[arm], ms=9)
ax.axhline(orig_recall.mean(), color=plots.ARM_COLORS["original"], ls=":", lw=1, label="original")
ax.set(xlabel="fine-tuning steps on the other folds' targets", ylabel="no-context recall of the held-out fold",
       ylim=(-0.05, 1.05), title="Relearning attack (×: benign fine-tuning, all targets)")
ax.legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "09_relearning")
plt.show()

# %% [markdown]
# ## Quantization attack
# Weights are rounded through gguf-py's own quantize/dequantize (`measures/quantization.py`): the tensors the shipped
# file quantizes, in its blocks of 32. Check first that this is the shipped grid: the original, read from the Q4_1
# file, comes back unchanged. Every arm of `quant_arms` in each format is scored with 02/03's evaluation (targets and
# retain facts, no context and RAG, every wording split, chance from a deranged key), cached like the attacks; each
# arm as it is (`none`) is read from 01 (the original) or its job. **recovery** = the quantized arm's no-context
# recall of the targets (held-out wordings) ÷ the original's, with a bootstrap over facts (0: still forgotten; 1: all
# back). **weight change** = |trained − original| per block weight in its block's Q4_1 steps: a weight moved by less
# than half a step rounds back (when its block keeps its min and max).

# %%
FORMATS = ["none", *P["quant_formats"]]
QUANT_CODE = ["rlcp_utils.measures.quantization", "rlcp_utils.measures.evaluate", "rlcp_utils.data.facts", "rlcp_utils.core.model"]
QUANT_READS = ["model", "seed", "eval_batch_size", "n_bootstrap", "quant_formats"]
HELD = "no_context_recall.heldout"
loaded: dict = {}


def model_of(arm: str):
    """The arm's model, kept while its tables are computed (one trained model in memory at a time)."""
    if arm not in loaded:
        loaded.pop(next((a for a in loaded if a != "original"), None), None)
        loaded[arm] = jobs.load_arm(P, arm, study)[0]
    return loaded[arm]


def model_key_of(arm: str) -> str:
    return "original" if arm == "original" else jobs.job_key(P, arm, P["seeds"][0], study)


def unquantized_scores(arm: str) -> pd.DataFrame:
    """The arm's scores as it is, read where they were computed, not scored again (scores do not depend on the batch,
    so they are the numbers a new scoring would give): 01's Group A for the original, the job of the first
    training seed for a trained arm. The same columns as quantized_scores' rows."""
    if arm == "original":
        record, per_item = jobs.original_scores(P)
    else:
        folder = jobs.job_dir(P, arm, P["seeds"][0])
        record, per_item = results.read(folder / "results.csv"), pd.read_csv(folder / "per_item.csv")
    parts = record.metric.str.extract(r"^(targets|retain)\.((?:no_context_recall|rag_accuracy)\.(?:train|heldout))$")
    rows = record[parts[0].notna()].assign(facts=parts[0], metric=parts[1], n_facts=lambda d: d.n_units)
    held = per_item[(per_item.facts == "targets") & (per_item.condition == HELD)].groupby("city").correct.mean()
    return pd.concat([rows[["facts", "metric", "value", "ci_low", "ci_high", "chance", "n_facts", "n_prompts"]].assign(fmt="none", city=""),
                      pd.DataFrame({"fmt": "none", "facts": "targets", "metric": f"per_fact.{HELD}", "city": held.index,
                                    "value": held.to_numpy()})], ignore_index=True)


def quantized_scores(arm: str) -> pd.DataFrame:
    """evaluate_arm's rows for the model read back through each format, with each fact's score of every condition
    (metric 'per_fact.<condition>': what the rows average, kept so that they can be recomputed); the model as it is
    comes from unquantized_scores."""
    key = {"model": model_key_of(arm), "precision": model.precision_of(P), "params": {k: P[k] for k in QUANT_READS},
           "data": DATA, "formats": FORMATS}

    def compute() -> pd.DataFrame:
        parts = []
        for fmt in P["quant_formats"]:
            lm = quantization.quantized_copy(model_of(arm), fmt)
            rows, items_out = evaluate.evaluate_arm(lm, tok, arm, {"targets": study.targets, "retain": study.retain}, study.questions,
                                                    study.evidences, study.prompt_format, P["eval_batch_size"], P["n_bootstrap"],
                                                    P["seed"], desc=f"{arm} {fmt}")
            per_fact = pd.DataFrame(items_out).groupby(["facts", "condition", "city"]).correct.mean().reset_index()
            parts += [pd.DataFrame(rows).assign(fmt=fmt, city=""),
                      pd.DataFrame({"fmt": fmt, "facts": per_fact.facts, "metric": "per_fact." + per_fact.condition,
                                    "city": per_fact.city, "value": per_fact.correct.astype(float)})]
        return pd.concat(parts, ignore_index=True)

    return pd.concat([unquantized_scores(arm), cache.cached_table(P, NOTEBOOK, f"{arm}_quantized", key, compute, QUANT_CODE)],
                     ignore_index=True)


def weight_change(arm: str) -> pd.DataFrame:
    """The arm's block weights' change from the original in Q4_1 steps (the original: its shipped round trip)."""
    def compute() -> pd.DataFrame:
        if arm == "original":
            changed, total = quantization.shipped_round_trip_changes(model_of("original"))
            return pd.DataFrame([{"changed_by_round_trip": changed, "n_weights": total}])
        steps = quantization.change_in_steps(model_of("original"), model_of(arm))
        return pd.DataFrame([{"median_steps": float(np.median(steps)), "share_under_half_step": float((steps < 0.5).mean()),
                              "n_weights": steps.size}])

    return cache.cached_table(P, NOTEBOOK, f"{arm}_weight_change", {"model": model_key_of(arm), "data": DATA}, compute, QUANT_CODE)


QUANTIZED = ["original"] + [a for a in TRAINED if a in P["quant_arms"]]  # every trained arm on the default profile
quant = {arm: quantized_scores(arm) for arm in QUANTIZED}
moved = {arm: weight_change(arm) for arm in QUANTIZED}
loaded.clear()
grid = moved["original"].iloc[0]
print(f"the original read back through the shipped formats: {int(grid.changed_by_round_trip)} of {int(grid.n_weights):,} "
      "weights changed (0: the same grid as the shipped file)")

# %%
quant_rows = [results.analysis_row(P, "original", "quant.original_off_grid_share", grid.changed_by_round_trip / grid.n_weights,
                                   unit="weights", n_units=int(grid.n_weights), interval="none (a count)")]
per_fact_of = {arm: {fmt: t[(t.fmt == fmt) & (t.facts == "targets") & (t.metric == f"per_fact.{HELD}")].set_index("city").value
                     for fmt in FORMATS} for arm, t in quant.items()}
for arm, t in quant.items():
    for r in t[~t.metric.str.startswith("per_fact.")].to_dict("records"):
        quant_rows.append(results.analysis_row(P, arm, f"quant.{r['fmt']}.{r['facts']}.{r['metric']}", r["value"], ci_low=r["ci_low"],
                                               ci_high=r["ci_high"], chance=r["chance"], unit="facts", n_units=int(r["n_facts"]),
                                               n_prompts=int(r["n_prompts"]), interval=evaluate.FACT_INTERVAL))
    if arm == "original":
        continue
    original = per_fact_of["original"]["none"]
    for fmt in FORMATS:
        if original.mean() > 0:
            ratio, lo, hi = quantization.ratio_ci(per_fact_of[arm][fmt].loc[original.index], original, P["n_bootstrap"], P["seed"])
            quant_rows.append(results.analysis_row(P, arm, f"quant.{fmt}.recovery", ratio, ci_low=lo, ci_high=hi, chance=np.nan,
                                                   unit="facts", n_units=len(original), interval="95% bootstrap over facts"))
    w = moved[arm].iloc[0]
    for stat in ["median_steps", "share_under_half_step"]:
        quant_rows.append(results.analysis_row(P, arm, f"quant.weight_change.{stat}", w[stat], unit="weights",
                                               n_units=int(w.n_weights), interval="none (every block weight)"))
results.write(P, NOTEBOOK, rows + quant_rows)
view = pd.DataFrame(quant_rows)
view = view[view.metric.str.contains(f"targets.{HELD}|retain.{HELD}|recovery|weight_change", regex=True)]
view.pivot(index="arm", columns="metric", values="value").reindex(QUANTIZED).round(3).T

# %% [markdown]
# No-context recall of targets and retain facts (held-out wordings), each model as it is and through each format
# (95% over facts). A trained arm's bar that climbs back towards the original's is forgetting the rounding undid.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
width = 0.8 / len(FORMATS)
all_rows = pd.DataFrame(quant_rows)
for ax, fact_set in zip(axes, ["targets", "retain"]):
    for j, fmt in enumerate(FORMATS):
        d = all_rows[all_rows.metric == f"quant.{fmt}.{fact_set}.{HELD}"].set_index("arm").reindex(QUANTIZED)
        x = np.arange(len(d)) + (j - (len(FORMATS) - 1) / 2) * width
        ax.bar(x, d.value, width, yerr=[d.value - d.ci_low, d.ci_high - d.value], capsize=2, label=fmt, alpha=0.85)
    ax.set_xticks(np.arange(len(d)), d.index, rotation=30, ha="right")
    ax.set(title=f"{fact_set}: no-context recall (held-out wordings)", ylim=(0, 1.05))
axes[0].set_ylabel("recall")
axes[1].legend(title="read back as", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
fig.tight_layout()
outputs.save_figure(P, fig, "09_quantization")
plt.show()

