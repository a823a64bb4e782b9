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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/11_kl_verbosity.ipynb)
#
# # 11 · KL and verbosity (the paper's limitation 3), measured
#
# Section 6.2 of the paper lists five limitations; notebooks 11–14 measure four of them on our model, each as
# a sweep of RLCP through the one training loop (`rlcp_utils/training/loop.py`), with the study's rules:
# chance level, n, and intervals that include the variation between training seeds where a difference between
# settings is claimed. This one takes limitation 3: the paper suggests that the chain-of-thought it saw may come
# from the KL term rather than from forgetting. RLCP is trained with other λ_KL (`kl_sweep`) and with the KL
# also at the answer positions: which outcomes does λ_KL drive?
#
# **Seeds.** Every setting is trained with `kl_sweep_seeds` and compared with 03's RLCP on the same seeds (same
# batch orders): its numbers are means over seeds and facts with the two-level interval of 02/03. The GSM8K
# replies come from each setting's first seed, whose weights are kept: the verdicts built on them say n = 1 seed.
#
# Reads: 01_data, 03_rlcp_training, 07_gsm8k

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
from IPython.display import Markdown, display

from rlcp_utils.core import config, model, notebook, outputs, results
from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate, gsm8k
from rlcp_utils.study import sweeps
from rlcp_utils.study.sweeps import fmt
from rlcp_utils.training import dispatch, jobs

P = notebook.start("11_kl_verbosity", globals())
NB = "11_kl_verbosity"
study = facts.load_study_data(P)
reference, tok = model.load_for(P)
config.check_probe_layer(P, reference.config.num_hidden_layers)
study_inputs = {P["kl_on_answer"]: jobs.study_inputs(P, study, reference, tok)}  # by KL positions (the sweep flips them)
record_rows: list[dict] = []
print(f"{len(study.targets)} targets, {len(study_inputs[P['kl_on_answer']].items)} training items; "
      f"KL settings trained with seeds {P['kl_sweep_seeds']}")

# %% [markdown]
# ## The settings
# RLCP as in 03, with λ_KL ∈ `kl_sweep` instead of the profile's λ_KL, and with the KL's positions flipped
# (`kl_on_answer`: on the default profile the KL is on the prompt only, so the flipped setting adds the positions
# that predict the answer). The profile's setting is 03's RLCP, loaded, not retrained.
# Per setting: no-context recall of the targets and of the 30 retain facts, RAG accuracy on held-out wordings,
# the answer's cross-entropy without context over the last epoch of training, and, for the first seed's
# model, GSM8K replies to the first `sweep_gsm8k_problems` of 07's problems (generated here for every setting,
# the original and 03's RLCP, in the same batches): length in tokens,
# how often a reply repeats itself (07's loop measure) and how often it has scaffolding (step headers,
# numbered lists, "first ... then").

# %%
KL_SETTINGS = {f"rlcp_kl{v:g}": {"lambda_kl": float(v)} for v in P["kl_sweep"] if float(v) != float(P["lambda_kl"])}
KL_FLIPPED = "rlcp_kl_on_answer" if not P["kl_on_answer"] else "rlcp_kl_off_answer"  # the profile's KL positions, flipped
KL_SETTINGS[KL_FLIPPED] = {"kl_on_answer": not P["kl_on_answer"]}
KL_PROFILES = {name: sweeps.sweep_profile(P, P["kl_sweep_seeds"], **overrides) for name, overrides in KL_SETTINGS.items()}
for Pv in KL_PROFILES.values():
    if Pv["kl_on_answer"] not in study_inputs:
        study_inputs[Pv["kl_on_answer"]] = jobs.study_inputs(Pv, study, reference, tok)
# one dispatch: every setting's seeds, and 03's RLCP on the seeds the sweep trains (the paired comparison)
kl_jobs = [jobs.Job(Pv, "rlcp", seed, study, name=name, notebook=NB, inputs=study_inputs[Pv["kl_on_answer"]])
           for name, Pv in KL_PROFILES.items() for seed in Pv["seeds"]]
kl_jobs += sweeps.rlcp_jobs(P, study, P["kl_sweep_seeds"], study_inputs[P["kl_on_answer"]])
kl_runs, kl_summary = sweeps.by_setting(kl_jobs, dispatch.run_jobs(kl_jobs, NB)), {}
for name in KL_SETTINGS:
    rows, kl_summary[name] = sweeps.job_rows(P, kl_runs[name])
    record_rows += rows
kl_summary["rlcp"] = sweeps.job_rows(P, kl_runs["rlcp"])[1]
pd.DataFrame([{"setting": name, "seed": seed, "λ_KL": (KL_SETTINGS.get(name, {})).get("lambda_kl", P["lambda_kl"]),
               "KL on answer": KL_SETTINGS.get(name, {}).get("kl_on_answer", P["kl_on_answer"]),
               "trained now": j["trained"], "training minutes": round(j["seconds"] / 60, 1)}
              for name, r in kl_runs.items() for seed, j in r.items()])

# %% [markdown]
# ## GSM8K replies
# Every model answers the same problems in the same batches (07's replies came from other batches: left padding
# can change a greedy reply), the original and 03's RLCP (first seed) included. Chance for accuracy: the rate
# of the most common reference answer.

# %%
problems = gsm8k.sample_problems(gsm8k.load_problems(), P["gsm8k_n_problems"], P["seed"])[:P["sweep_gsm8k_problems"]]
gsm_ids = [tok(gsm8k.build_prompt(tok, p["question"]), add_special_tokens=False).input_ids for p in problems]


def score_replies(texts: list[str]) -> pd.DataFrame:
    """07's measures of each GSM8K reply."""
    rows = []
    for p, text in zip(problems, texts):
        pred = gsm8k.extract_answer(text)
        rows.append({"index": p["index"], "correct": gsm8k.is_correct(pred, p["answer"]), "any_scaffolding": gsm8k.has_scaffolding(text),
                     "repeats_itself": gsm8k.repeats_itself(text), "n_tokens": len(tok(text, add_special_tokens=False).input_ids)})
    return pd.DataFrame(rows)


replies = {"original": score_replies(evaluate.greedy_generate(reference, tok, gsm_ids, P["gsm8k_max_new_tokens"],
                                                              P["generation_batch_size"], desc="GSM8K original"))}
for name, overrides in {"rlcp": {}, **KL_SETTINGS}.items():
    Pv = sweeps.sweep_profile(P, P["kl_sweep_seeds"], **overrides)
    lm, _, _ = jobs.load_arm(Pv, "rlcp", study, name=name)
    replies[name] = score_replies(evaluate.greedy_generate(lm, tok, gsm_ids, P["gsm8k_max_new_tokens"], P["generation_batch_size"],
                                                           desc=f"GSM8K {name}"))
    del lm
# the per-problem rows that the record's kl_sweep.gsm8k rows average (study/recompute.py recomputes them)
outputs.write_table(P, "11_kl_sweep_gsm8k_scored", pd.concat([d.assign(arm=arm) for arm, d in replies.items()], ignore_index=True))
GSM_MEASURES = {"n_tokens": "reply length (tokens)", "repeats_itself": "reply repeats itself", "any_scaffolding": "reply has scaffolding",
                "correct": "GSM8K accuracy"}
mode_rate = pd.Series([p["answer"] for p in problems]).value_counts(normalize=True).iloc[0]
for arm, d in replies.items():  # every setting on the same problems
    seed, n_seeds = ("all", 0) if arm == "original" else (str(P["kl_sweep_seeds"][0]), 1)
    record_rows += [sweeps.bootstrap_row(P, arm, seed, f"kl_sweep.gsm8k.{m}", d[m], "problems", n_seeds,
                                         chance=mode_rate if m == "correct" else np.nan, n_prompts=len(d)) for m in GSM_MEASURES]


def final_ce(name: str, seed: int) -> float:
    """Mean no-context answer CE over the last epoch of training (the train log)."""
    log = jobs.train_log(P, name, seed)
    return float(log[log.epoch == log.epoch.max()].ce_no_context.mean())


# %% [markdown]
# ## What λ_KL drives
# One row per setting, ordered by λ_KL, the flipped KL positions last.

# %%
KL_METRICS = {"targets.no_context_recall.heldout": "targets, no context (held-out wordings)",
              "retain.no_context_recall.heldout": "retain facts, no context (held-out wordings)",
              "targets.rag_accuracy.heldout": "targets, RAG (held-out wordings)"}
order = sorted([n for n in kl_runs if n != KL_FLIPPED],
               key=lambda n: P["lambda_kl"] if n == "rlcp" else KL_SETTINGS[n]["lambda_kl"]) + [KL_FLIPPED]
kl_table = []
for name in order:
    s = kl_summary[name].set_index("metric")
    lam = P["lambda_kl"] if name == "rlcp" else KL_SETTINGS[name].get("lambda_kl", P["lambda_kl"])
    ces = [final_ce(name, seed) for seed in kl_runs[name]]
    row = {"setting": name, "λ_KL": lam, "KL on answer": KL_SETTINGS.get(name, {}).get("kl_on_answer", P["kl_on_answer"]),
           "seeds": len(kl_runs[name])}
    row.update({label: fmt(s.loc[m].value, s.loc[m].ci_low, s.loc[m].ci_high) for m, label in KL_METRICS.items()})
    row["answer CE, no context, last epoch (seed range)"] = f"{np.mean(ces):.1f} ({min(ces):.1f}–{max(ces):.1f})"
    if name != "rlcp":
        record_rows.append({"arm": name, "seed": "all", "metric": "train.final_ce_no_context", "value": float(np.mean(ces)),
                            "ci_low": min(ces), "ci_high": max(ces), "interval": "range over training seeds", "unit": "seeds",
                            "n_units": len(ces), "n_seeds": len(ces)})
    d = replies[name]
    for m, label in GSM_MEASURES.items():
        mean, lo, hi = evaluate.bootstrap_ci(d[m].to_numpy(float), P["n_bootstrap"], P["seed"])
        row[label] = fmt(mean, lo, hi, pct=m != "n_tokens")
    kl_table.append(row)
kl_table = pd.DataFrame(kl_table)
outputs.write_table(P, "11_kl_sweep", kl_table)
display(Markdown(f"GSM8K columns: the first seed's model on {len(problems)} problems [95% bootstrap over problems]; "
                 f"chance for accuracy {mode_rate:.0%}. Recall: mean over seeds and facts [95% two-level interval]; chance ≈ 0 "
                 "(the deranged-answer rate, 02)."))
kl_table

# %%
fig, axes = plt.subplots(1, 5, figsize=(19, 3.6))
lams = [P["lambda_kl"] if n == "rlcp" else KL_SETTINGS[n]["lambda_kl"] for n in order[:-1]]
panels = [(m, label) for m, label in KL_METRICS.items()]
for ax, (m, label) in zip(axes[:3], panels):
    flipped_label = "KL also on the answer" if KL_SETTINGS[KL_FLIPPED]["kl_on_answer"] else "KL on the prompt only"
    for names, marker, lab in [(order[:-1], "o-", "the profile's KL positions"), ([order[-1]], "s", flipped_label)]:
        xs = lams if marker == "o-" else [P["lambda_kl"]]
        v = [kl_summary[n].set_index("metric").loc[m] for n in names]
        ax.errorbar(xs, [r.value for r in v], yerr=[[r.value - r.ci_low for r in v], [r.ci_high - r.value for r in v]],
                    fmt=marker, capsize=3, label=lab)
    ax.set(title=label, xlabel="λ_KL", ylim=(-0.05, 1.05))
axes[0].legend(fontsize=8)
for ax, m in zip(axes[3:], ["n_tokens", "repeats_itself"]):
    means = [replies[n][m].mean() for n in order[:-1]]
    ax.plot(lams, means, "o-")
    ax.plot([P["lambda_kl"]], [replies[order[-1]][m].mean()], "s")
    ax.axhline(replies["original"][m].mean(), color="0.5", ls=":", label="original")
    ax.set(title=GSM_MEASURES[m] + " (GSM8K, first seed)", xlabel="λ_KL")
    ax.legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "11_kl_sweep")
plt.show()

# %%
results.write(P, NB, record_rows)
print(f"{len(record_rows)} rows written to the results record")
