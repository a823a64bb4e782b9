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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/07_gsm8k.ipynb)
#
# # 07 · The GSM8K case study (Table 2), measured
#
# The paper's "core finding": after RLCP the model spontaneously writes "Step 1 / Step 2" scaffolding on
# GSM8K, shown with hand-picked generations (Table 2). The paper itself lists other possible causes,
# among them KL regularisation making outputs more verbose. Here every arm answers the same fixed, seeded
# subset of the GSM8K test split (vendored in `rlcp_utils/resources/gsm8k`, MIT licence), with greedy
# decoding through the chat template, and we count:
#
# - **accuracy**: the final number extracted from the reply (a `####` marker, an "answer is" phrase,
#   `\boxed{}`, else the last number) equals the reference;
# - **scaffolding**: "Step N" headers (the paper's claim), numbered lists, "First, … Then" connectives;
# - **length**: generated tokens, how often the token limit cut the reply, and how often a reply loops
#   (some line repeated three times or more): longer is not the same as more reasoning.
#
# Every arm except the original was trained with the same KL term, so Just-RAG (KL, no GRL, no
# unlikelihood) is the control for "KL made it verbose"; paired differences against the original are
# bootstrapped over problems.
#
# This notebook analyses one trained model per arm, the first training seed (`seeds[0]`): generating
# every reply costs minutes per model, so the seed spread is reported by 02/03 on Table 1's metrics; every
# row of `results/07_gsm8k.csv` says n_seeds = 1 (0 for the untrained original).
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
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from rlcp_utils.core import notebook, outputs, plots, results
from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate, gsm8k
from rlcp_utils.training import jobs

P = notebook.start("07_gsm8k", globals())
study = facts.load_study_data(P)
ARMS = ["original"] + list(P["arms"])
problems = gsm8k.sample_problems(gsm8k.load_problems(), P["gsm8k_n_problems"], P["seed"])
print(f"{len(problems)} GSM8K test problems (seed {P['seed']}), up to {P['gsm8k_max_new_tokens']} new tokens, "
      f"batches of {P['generation_batch_size']}; arms {ARMS} (trained arms: training seed {P['seeds'][0]})")


def result_row(arm: str, metric: str, value, **fields) -> dict:
    return results.analysis_row(P, arm, metric, value, **fields)

# %% [markdown]
# ## Generate
# Greedy, batched (left padding, KV cache). Each arm's generations are written to
# `tables/07_gsm8k_generations_<arm>.csv` as soon as they finish and reused by a rerun with the same
# settings (every parameter up to this notebook, and the precision the model runs in), so an interruption
# loses at most one arm. A `FORCE=1` run ignores these files and generates again.

# %%
original, tok, _ = jobs.load_arm(P, "original", study)
prompts = [gsm8k.build_prompt(tok, p["question"]) for p in problems]
prompt_ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
generations, seconds = {}, {}
for arm in ARMS:
    # what these generations depend on: the model (the original, or the first seed's job key, which covers the
    # training settings and the precision), the GSM8K settings, and the precision of generation itself
    model_key = "original" if arm == "original" else jobs.job_key(P, arm, P["seeds"][0], study)
    settings_key = f"{model_key}-{P.hash_of_stage(7)}-{jobs.precision_of(P)}"
    path = P.sub("tables") / f"07_gsm8k_generations_{arm}.csv"
    if path.exists() and not notebook.force_recompute():
        cached = pd.read_csv(path, keep_default_na=False, dtype={"settings_key": str})
        if len(cached) == len(problems) and (cached.settings_key == settings_key).all():
            generations[arm], seconds[arm] = cached.generation.tolist(), float(cached.seconds.iloc[0])
            print(f"{arm}: reused {path.name}")
            continue
    lm = original if arm == "original" else jobs.load_arm(P, arm, study)[0]
    t0 = time.time()
    generations[arm] = evaluate.greedy_generate(lm, tok, prompt_ids, P["gsm8k_max_new_tokens"], P["generation_batch_size"],
                                                desc=f"GSM8K {arm}")
    seconds[arm] = time.time() - t0
    outputs.write_table(P, f"07_gsm8k_generations_{arm}", pd.DataFrame({
        "index": [p["index"] for p in problems], "generation": generations[arm], "settings_key": settings_key,
        "seconds": round(seconds[arm], 1)}))
    if arm != "original":
        del lm
pd.Series(seconds, name="generation seconds").round(1).to_frame()

# %% [markdown]
# ## Score

# %%
rows = []
for arm in ARMS:
    for p, text in zip(problems, generations[arm]):
        pred = gsm8k.extract_answer(text)
        n_tokens = len(tok(text, add_special_tokens=False).input_ids)
        rows.append({"arm": arm, "index": p["index"], "reference": p["answer"], "prediction": pred,
                     "correct": gsm8k.is_correct(pred, p["answer"]), **gsm8k.scaffolding(text),
                     "any_scaffolding": gsm8k.has_scaffolding(text), "repeats_itself": gsm8k.repeats_itself(text),
                     "n_tokens": n_tokens,
                     "hit_limit": n_tokens >= P["gsm8k_max_new_tokens"] - 1})
scored = pd.DataFrame(rows)
outputs.write_table(P, "07_gsm8k_scored", scored)
# Chance for accuracy: always answering the subset's most common reference answer.
mode_rate = pd.Series([p["answer"] for p in problems]).value_counts(normalize=True).iloc[0]

METRICS = ["correct", "step_headers", "numbered_list", "first_then", "any_scaffolding", "repeats_itself", "n_tokens", "hit_limit"]
summary = []
for arm in ARMS:
    d = scored[scored.arm == arm].sort_values("index")
    base = scored[scored.arm == "original"].sort_values("index")
    for m in METRICS:
        mean, lo, hi = evaluate.bootstrap_ci(d[m].to_numpy(float), P["n_bootstrap"], P["seed"])
        diff, dlo, dhi = evaluate.bootstrap_ci(d[m].to_numpy(float) - base[m].to_numpy(float), P["n_bootstrap"], P["seed"])
        summary.append({"arm": arm, "metric": m, "value": mean, "ci_low": lo, "ci_high": hi,
                        "minus_original": diff, "diff_ci_low": dlo, "diff_ci_high": dhi, "n_problems": len(d),
                        "chance": mode_rate if m == "correct" else np.nan})
summary = pd.DataFrame(summary)
outputs.write_table(P, "07_gsm8k_summary", summary)
result_rows = []
for r in summary.itertuples():
    common = {"unit": "problems", "n_units": int(r.n_problems), "n_prompts": int(r.n_problems)}
    result_rows.append(result_row(r.arm, f"gsm8k.{r.metric}", r.value, ci_low=float(r.ci_low), ci_high=float(r.ci_high),
                                  interval="95% bootstrap over problems",
                                  chance=None if np.isnan(r.chance) else float(r.chance), **common))
    if r.arm != "original":  # the original minus itself is 0 by construction: no row
        result_rows.append(result_row(r.arm, f"gsm8k.{r.metric}.minus_original", r.minus_original,
                                      ci_low=float(r.diff_ci_low), ci_high=float(r.diff_ci_high),
                                      interval="95% paired bootstrap over problems", **common))
results.write(P, "07_gsm8k", result_rows)
fmt = lambda v, lo, hi, pct: f"{v:.1%} [{lo:.0%}, {hi:.0%}]" if pct else f"{v:.0f} [{lo:.0f}, {hi:.0f}]"
summary.assign(cell=[fmt(r.value, r.ci_low, r.ci_high, r.metric != "n_tokens") for r in summary.itertuples()]) \
    .pivot(index="metric", columns="arm", values="cell").reindex(index=METRICS, columns=ARMS)

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
COLORS = plots.ARM_COLORS
for ax, m, label in zip(axes, ["correct", "step_headers", "n_tokens"],
                        ["accuracy", "replies with 'Step N' headers", "generated tokens"]):
    d = summary[summary.metric == m].set_index("arm").loc[ARMS]
    ax.bar(ARMS, d.value, color=[COLORS[a] for a in ARMS], yerr=[d.value - d.ci_low, d.ci_high - d.value], capsize=4)
    ax.set_title(f"{label} (n = {len(problems)}, 95% CI)", fontsize=9)
    if m == "correct":
        ax.axhline(mode_rate, color="k", ls="--", lw=0.8, label="most common answer")
        ax.legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "07_gsm8k")
plt.show()

# %% [markdown]
# ## Table 2, regenerated by a rule
# The first three problems of the seeded subset (no selection), original vs RLCP, full replies.

# %%
show = [a for a in ["original", "rlcp"] if a in ARMS]
examples = [{"problem": p["question"], "reference": p["answer"], **{arm: generations[arm][i] for arm in show}}
            for i, p in enumerate(problems[:3])]
md = ["| | " + " | ".join(show) + " |", "|---|" + "---|" * len(show)]
for e in examples:
    cells = [e[arm].strip().replace("|", "\\|").replace("\n", "<br>") for arm in show]
    md.append(f"| {e['problem'].replace('|', '/')}<br>**reference: {e['reference']}** | " + " | ".join(cells) + " |")
outputs.atomic_write_text(P.sub("tables") / "07_gsm8k_examples.md", "\n".join(md) + "\n")
display(Markdown("\n".join(md)))

# %%
def cell(arm, m):
    r = summary[(summary.arm == arm) & (summary.metric == m)].iloc[0]
    return fmt(r.value, r.ci_low, r.ci_high, m != "n_tokens")


def diff(arm, m):
    r = summary[(summary.arm == arm) & (summary.metric == m)].iloc[0]
    return f"{r.minus_original:+.1%} [{r.diff_ci_low:+.0%}, {r.diff_ci_high:+.0%}]" if m != "n_tokens" else \
        f"{r.minus_original:+.0f} [{r.diff_ci_low:+.0f}, {r.diff_ci_high:+.0f}]"


lines = [f"n = {len(problems)} problems; accuracy chance (most common answer) {mode_rate:.1%}.", ""]
for arm in ARMS:
    extra = "" if arm == "original" else (f" Against the original: step headers {diff(arm, 'step_headers')}, "
                                          f"accuracy {diff(arm, 'correct')}, length {diff(arm, 'n_tokens')} tokens.")
    lines.append(f"- **{arm}**: accuracy {cell(arm, 'correct')}; 'Step N' headers {cell(arm, 'step_headers')}, any scaffolding "
                 f"{cell(arm, 'any_scaffolding')}; {cell(arm, 'n_tokens')} tokens, {cell(arm, 'hit_limit')} cut at the limit, "
                 f"{cell(arm, 'repeats_itself')} looping.{extra}")
display(Markdown("\n".join(lines)))
