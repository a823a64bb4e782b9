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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/10_unlearning_checks.ipynb)
#
# # 10 · Does the model still speak, and is the information still there? The unlearning benchmark
#
# 08 measured whether each arm's forgetting is targeted and 09 whether the facts come back under relearning.
# Here the remaining questions the unlearning field asks of a method, on the first training seed's model of every
# arm (the weights are kept for that seed only; every number is one model per arm, with an interval over facts
# or texts, and the record says n seeds = 1):
#
# - **Fluency**: greedy answers (`max_new_tokens_answer` tokens) to the no-context questions under the
#   held-out templates, for the targets and the held-out retain facts: does the answer name some country
#   (any of GeoNames' countries, right or wrong), and is it degenerate (`unlearning.is_degenerate`: no word of
#   two letters, or one token making up half of four or more).
# - **Language ability**: mean per-token loss on the last `lm_loss_texts` GSM8K test problems with their
#   reference solutions (the first 128 tokens of each; text no arm trains on), as a ratio to the original's.
# - **Information still there**: 04's linear country probe at l* (`probing.country_probe_on_targets`: trained on
#   the other known cities of the target countries, 01's probe cities, less one held out per country, in
#   `n_probe_seeds` splits; tested on the 15 targets at the city token and at the last token; chance 1/K). 04
#   measured it for the original and the paper's arms; here the same rule measures the benchmark's arms, so every
#   arm's number comes from one rule and the paper's arms' from one place (04's record rows).
#
# Then the benchmark in one table (08's forgetting and collateral damage, 09's relearning, the checks here),
# the forgetting-vs-collateral figure and the verdicts on our questions.
#
# Reads: 01_data, 02_baselines, 03_rlcp_training, 04_probing, 07_gsm8k, 08_unlearning, 09_relearning

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
from IPython.display import Markdown, display

from rlcp_utils.core import cache, model, notebook, outputs, plots, results
from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate, gsm8k, probing, unlearning
from rlcp_utils.methods import registry
from rlcp_utils.study import claims, tolerance
from rlcp_utils.training import jobs

P = notebook.start("10_unlearning_checks", globals())
study = facts.load_study_data(P)
retain_heldout = facts.split_retain(study.retain)[1]
TRAINED = [a for a in registry.PAPER_ARMS if a in P["arms"]] + list(P["benchmark_arms"])
ARMS = ["original"] + TRAINED
K = len(study.targets)
reference, tok = model.load_for(P)
del reference  # the prompts need the tokenizer; each model is loaded when one of its tables is computed
countries = unlearning.country_pattern(facts.country_names())
heldout_q = [q for q in study.questions if q.split == "heldout"]
fluency_items = (facts.build_items(tok, study.targets, heldout_q, study.prompt_format)
                 + [dict(i, fact=i["fact"] + K) for i in facts.build_items(tok, retain_heldout, heldout_q, study.prompt_format)])
fluency_set = np.array(["targets"] * (K * len(heldout_q)) + ["retain_heldout"] * (len(retain_heldout) * len(heldout_q)))
problems = gsm8k.load_problems()
lm_ids = unlearning.text_ids(tok, [p["question"] + "\n" + p["solution"] for p in problems[-P["lm_loss_texts"]:]])
probe_prompts = probing.country_probe_prompts(tok, study)  # 04's prompts and labels
# 04 records the country probe of the original and the paper's arms; here the benchmark's arms are measured, and the
# original once more, to check that this is 04's rule (its number must equal 04's)
PROBED_IN_04 = set(P["arms"])
print(f"{len(fluency_items)} fluency prompts; {len(lm_ids)} texts for the loss; country probe: {(~probe_prompts.is_target).sum()} "
      f"prompts of {len(study.probe_cities)} other cities -> {probe_prompts.is_target.sum()} target prompts; arms {ARMS}")

# %% [markdown]
# ## The measures, three cached tables per model
# Per prompt or text, for each model: its fluency answers, its per-token losses and the country probe's
# verdict on each target prompt. Each table is computed once and kept in `analyses/10_unlearning_checks/` with
# its key (the parameters below, the model's job key, 01's data and the measures' code); a rerun with nothing
# changed reads them back without loading the model (`core/cache.py`).

# %%
NOTEBOOK = "10_unlearning_checks"
READS = ["model", "seed", "eval_batch_size", "generation_batch_size", "max_new_tokens_answer", "probe_layer", "lm_loss_texts",
         "n_probe_seeds"]
CODE = ["rlcp_utils.measures.unlearning", "rlcp_utils.measures.evaluate", "rlcp_utils.measures.probing",
        "rlcp_utils.measures.gsm8k", "rlcp_utils.data.facts", "rlcp_utils.core.model"]
DATA = {f: hashlib.sha256((P.output_dir / "data" / f).read_bytes()).hexdigest()[:16]
        for f in ["templates.json", "targets.jsonl", "retain.jsonl", "country_probe_cities.jsonl"]}


def fluency(lm) -> pd.DataFrame:
    answers = evaluate.greedy_generate(lm, tok, [i["prompt_ids"] for i in fluency_items], P["max_new_tokens_answer"],
                                       P["generation_batch_size"])
    return pd.DataFrame({"fact": [i["fact"] for i in fluency_items], "set": fluency_set, "answer": answers,
                         "names_a_country": [unlearning.names_a_country(t, countries) for t in answers],
                         "degenerate": [unlearning.is_degenerate(t) for t in answers]})


def lm_loss(lm) -> pd.DataFrame:
    loss = unlearning.mean_token_loss(lm, lm_ids, tok.pad_token_id)  # float32, exact in the CSV as float64
    return pd.DataFrame({"text": range(len(loss)), "loss": loss.astype(np.float64)})


def country_probe(lm) -> pd.DataFrame:
    return probing.country_probe_of_model(lm, probe_prompts, P["probe_layer"], P["n_probe_seeds"], P["seed"], P["eval_batch_size"],
                                          tok.pad_token_id)


def measured(arm: str) -> dict[str, pd.DataFrame]:
    model_key = "original" if arm == "original" else jobs.job_key(P, arm, P["seeds"][0], study)
    key = {"model": model_key, "precision": model.precision_of(P), "params": {k: P[k] for k in READS}, "data": DATA}
    loaded = {}

    def lm():
        if arm not in loaded:
            loaded[arm] = jobs.load_arm(P, arm, study)[0]
        return loaded[arm]

    measures = [("fluency", fluency), ("lm_loss", lm_loss)] + ([] if arm in PROBED_IN_04 else [("country_probe", country_probe)])
    out = {name: cache.cached_table(P, NOTEBOOK, f"{name}_{arm}", key, lambda f=f: f(lm()), CODE) for name, f in measures}
    print(f"measured {arm}")
    return out


tables = {arm: measured(arm) for arm in ARMS}

# %% [markdown]
# ## Per fact (or text), then the record
# Fluency and the probe: each fact's rate over its prompts, then the mean over facts with a bootstrap interval
# over facts. The loss: the mean over texts, and its ratio to the original's with a paired bootstrap over the
# same texts.

# %%
def row(arm, metric, value, lo=np.nan, hi=np.nan, **fields):
    return results.analysis_row(P, arm, metric, value, ci_low=lo, ci_high=hi, **fields)


def per_fact_row(arm, metric, per_fact_values, chance=np.nan, unit="facts", n_prompts=None):
    v = np.asarray(per_fact_values, dtype=float)
    mean, lo, hi = evaluate.bootstrap_ci(v, P["n_bootstrap"], P["seed"])
    return row(arm, metric, mean, lo, hi, chance=chance, unit=unit, n_units=len(v), n_prompts=n_prompts,
               interval=f"95% bootstrap over {unit}")


orig_loss = tables["original"]["lm_loss"].loss.to_numpy(np.float32)
probed_in_04 = results.summary(results.load(P), results.STUDY_DRAW)
rows, samples = [], {}
for arm in ARMS:
    ans = tables[arm]["fluency"]
    for fact_set, d in ans.groupby("set"):
        for measure in ["names_a_country", "degenerate"]:
            rows.append(per_fact_row(arm, f"fluency.{measure}.{fact_set}", d.groupby("fact")[measure].mean(), n_prompts=len(d)))
    # the sample: the first target and the first held-out retain fact under the first held-out template
    samples[arm] = list(ans.answer.fillna("")[[0, K * len(heldout_q)]])
    loss = tables[arm]["lm_loss"].loss.to_numpy(np.float32)
    mean, lo, hi = evaluate.bootstrap_ci(loss, P["n_bootstrap"], P["seed"])
    rows.append(row(arm, "lm_loss.gsm8k_solutions", mean, lo, hi, unit="texts", n_units=len(loss), interval="95% bootstrap over texts"))
    # ratio of mean losses, paired bootstrap over the same texts
    boots = np.random.default_rng(P["seed"]).integers(0, len(orig_loss), size=(P["n_bootstrap"], len(orig_loss)))
    ratios = loss[boots].mean(1) / orig_loss[boots].mean(1)
    rows.append(row(arm, "lm_loss.ratio_to_original", loss.mean() / orig_loss.mean(), *np.quantile(ratios, [0.025, 0.975]),
                    unit="texts", n_units=len(orig_loss), interval="95% paired bootstrap over texts"))
    if "country_probe" in tables[arm]:  # as 04 records it: each target's accuracy over splits and prompts, by city
        probe = tables[arm]["country_probe"]
        for pos in ["city", "last"]:
            by_city = probe[probe.position == pos].groupby("city").correct.mean()
            mean, lo, hi = evaluate.bootstrap_ci(by_city.to_numpy(), P["n_bootstrap"], P["seed"])
            metric = f"heldout_probe_accuracy.country_target.linear.{pos}"
            if arm == "original":  # 04's row, measured again by the shared rule: a check that the rule has not drifted
                recorded = probed_in_04.loc[("original", metric)].value
                # the same number on 04's machine; on another CPU, other bf16 kernels flip a few borderline prompts
                # (04 on an amx_bf16 CPU, 10 on an avx512_bf16-only one: 0.6889 and 0.6800), within the tolerance
                # `make verify` allows between machines
                print(f"original, {metric}: 04 {recorded:.4f}, here {mean:.4f}")
                assert abs(recorded - mean) <= tolerance.TOLERANCE[model.precision_of(P)] + 1e-9, f"{metric}: 04 {recorded:.4f}, here {mean:.4f}"
                continue
            rows.append(row(arm, metric, mean, lo, hi, chance=1 / K, unit="facts", n_units=len(by_city),
                            n_prompts=int(probe_prompts.is_target.sum()),
                            interval=f"95% bootstrap over facts (mean over {P['n_probe_seeds']} splits)"))
results.write(P, NOTEBOOK, rows)
record = results.load(P)

# %% [markdown]
# ## The benchmark table
# One row per arm. Forgetting and collateral (08): mean over training seeds and facts [95% interval]; the other
# columns (09 and here): the first training seed's model [95% interval over facts or texts]. Chance: the
# deranged-answer rate for recall (≈ 0 here), 1/K for the probe.

# %%
COLUMNS = {"targets.no_context_recall.train": "targets, no context (train wordings)",
           "targets.no_context_recall.heldout": "targets, no context (held-out wordings)",
           "targets.no_context_recall_answer_prob.heldout": "P(answer), targets, held-out wordings",
           "retain_heldout.no_context_recall.heldout": "held-out retain facts, no context",
           "retain_train.no_context_recall.heldout": "training retain facts, no context",
           "targets.rag_accuracy.heldout": "targets, RAG (held-out wordings)",
           "retain_heldout.rag_accuracy.heldout": "held-out retain facts, RAG",
           "fluency.names_a_country.targets": "answer names a country (targets)",
           "fluency.degenerate.targets": "degenerate answer (targets)",
           "fluency.names_a_country.retain_heldout": "answer names a country (held-out retain)",
           "lm_loss.ratio_to_original": "per-token loss on GSM8K text ÷ original",
           "heldout_probe_accuracy.country_target.linear.city": f"country probe at the city token, l* (chance {1 / K:.0%})",
           "heldout_probe_accuracy.country_target.linear.last": f"country probe at the last token, l* (chance {1 / K:.0%})",
           f"relearn.recall.step{max(P['relearn_steps'])}": f"recall after relearning ({max(P['relearn_steps'])} steps on other targets)",
           "relearn.recovery": "relearning recovery",
           "benign_relearn.targets_recall": "targets' recall after benign fine-tuning"}
view = results.summary(record, results.STUDY_DRAW)  # every benchmark arm on the study's fact draw


def cell(arm, key):
    if (arm, key) not in view.index:
        return "–"
    r = view.loc[(arm, key)]
    pct = not key.startswith("lm_loss")
    fmt = (lambda x: f"{x:.0%}") if pct else (lambda x: f"{x:.2f}")
    text = f"{r.value:.1%}" if pct else f"{r.value:.2f}"
    return text + (f" [{fmt(r.ci_low)}, {fmt(r.ci_high)}]" if not pd.isna(r.ci_low) else "")


bench_table = pd.DataFrame({label: [cell(arm, key) for arm in ARMS] for key, label in COLUMNS.items()}, index=ARMS)
bench_table.insert(0, "training seeds", [0 if arm == "original" else len(P["seeds"]) for arm in ARMS])
outputs.write_table(P, "10_benchmark", bench_table.reset_index(names="arm"))
outputs.atomic_write_text(P.sub("tables") / "10_benchmark.md", outputs.markdown_table(bench_table.T))
display(Markdown(outputs.markdown_table(bench_table.T)))

# %% [markdown]
# ## What each model says without context
# By a fixed rule: the first target and the first held-out retain fact, under the first held-out template
# (the first training seed's model).

# %%
pd.DataFrame(samples, index=[f"target: {study.targets[0]['city']} ({study.targets[0]['country']})",
                             f"held-out retain: {retain_heldout[0]['city']} ({retain_heldout[0]['country']})"]).T

# %% [markdown]
# ## Forgetting against collateral damage
# One point per arm: forgetting (1 − no-context recall of the targets, held-out wordings) against the recall
# of the held-out retain facts, with the two-level intervals over seeds and facts as error bars. The ideal
# method sits in the top right corner; the original model (top left) is marked.

# %%
fig, ax = plt.subplots(figsize=(6.5, 5.2))
for arm in ARMS:
    x, y = view.loc[(arm, "targets.no_context_recall.heldout")], view.loc[(arm, "retain_heldout.no_context_recall.heldout")]
    ax.errorbar(1 - x.value, y.value, xerr=[[x.ci_high - x.value], [x.value - x.ci_low]], yerr=[[y.value - y.ci_low], [y.ci_high - y.value]],
                fmt="*" if arm == "original" else "o", ms=12 if arm == "original" else 7, capsize=3,
                color=plots.ARM_COLORS[arm], label=f"{arm} ({int(x.n_seeds)} seeds)" if arm != "original" else "original")
ax.set(xlabel="forgetting: 1 − target recall, no context, held-out wordings",
       ylabel="held-out retain facts: recall, no context", xlim=(-0.05, 1.05), ylim=(-0.05, 1.05))
ax.axhline(0.9 * view.loc[("original", "retain_heldout.no_context_recall.heldout")].value, color="0.6", ls=":", lw=1)
ax.axvline(1 - claims.FORGOTTEN, color="0.6", ls=":", lw=1)
ax.legend(fontsize=8, loc="lower left")
ax.set_title("Forgetting vs collateral damage (dotted: the selective goal)")
fig.tight_layout()
outputs.save_figure(P, fig, "10_pareto")
plt.show()

# %% [markdown]
# ## Verdicts
# Our questions, judged by the study's one set of rules (`rlcp_utils/study/claims.py`, section "Unlearning
# benchmark"; the report shows them with the paper's claims): the selective goal, and whether RLCP's adversary
# buys anything over the field's methods.

# %%
verdicts = claims.judge(record, section=claims.BENCH)
outputs.write_table(P, "10_claims", verdicts)
verdicts[["claim", "ours", "n", "rule", "verdict"]]
