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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/06_attention.ipynb)
#
# # 06 · Does attention sharpen onto the evidence? (Figures 3 and 4)
#
# The paper's "neural recycling": on a RAG prompt, layer-l\* attention at the prediction step is diffuse
# for Just-RAG (entropy H = 1.59) and sharp for RLCP (H = 0.90), focused on the evidence token ("Germany"),
# with weight ≈ 0.7 on it against < 0.1 for the baseline. Here the same quantities are measured on every
# RAG prompt of every target and retain fact, for every arm, at every layer.
#
# **Definitions** (the paper does not give them, so they are stated here and are the same everywhere):
# - *Layer l\**: the attention of the block whose output is `hidden_states[l*]` (block index l\* − 1 in
#   `model.model.layers`), so the probe of 03/04 and this attention refer to the same depth.
# - *Prediction step*: the query at the last prompt token, the position whose output predicts the answer.
# - *Evidence token(s)*: the tokens of the country's name inside the evidence sentence (all of them for a
#   multi-token name); *evidence weight* = the attention summed over them.
# - *Entropy*: natural log (nats), of the head-averaged distribution, computed two ways: over **all** prompt
#   tokens (the model's own distribution, dominated by the attention sink on the first token) and over the
#   **context** tokens only (the evidence sentence, renormalised), which is what the paper's heatmap shows.
#
# This notebook analyses one trained model per arm, the first training seed (`seeds[0]`): its attention
# maps cost minutes per model, so the seed spread is reported by 02/03 on Table 1's metrics; every row of
# `results/06_attention.csv` says n_seeds = 1 (0 for the untrained original).
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
from IPython.display import Markdown, display

from rlcp_utils.core import config, notebook, outputs, plots, results
from rlcp_utils.data import facts
from rlcp_utils.measures import attention, evaluate
from rlcp_utils.training import jobs

P = notebook.start("06_attention", globals())
study = facts.load_study_data(P)
ARMS = ["original"] + list(P["arms"])
LSTAR = P["probe_layer"]
BLOCK = LSTAR - 1  # attentions[BLOCK] belongs to the block whose output is hidden_states[LSTAR]
print(f"arms {ARMS} (trained arms: training seed {P['seeds'][0]}), layer l* = {LSTAR}")


def result_row(arm: str, metric: str, value, **fields) -> dict:
    return results.analysis_row(P, arm, metric, value, **fields)

# %% [markdown]
# ## RAG prompts and the evidence span
# Every target and retain fact under every question template, each paired with an evidence phrasing
# (question k with evidence k mod the number of phrasings, as in the evaluation of 02/03).

# %%
original, tok, _ = jobs.load_arm(P, "original", study)
if BLOCK < 0:
    raise config.ParameterError("probe_layer 0 is the embedding output: it has no attention; use probe_layer >= 1")
scored_facts = [dict(t, role="target") for t in study.targets] + [dict(r, role="retain") for r in study.retain]
items = facts.build_items(tok, scored_facts, study.questions, study.prompt_format, evidences=study.evidences)
plain = study.prompt_format == "plain"
for it in items:
    ev = facts.evidence(next(e for e in study.evidences if e.id == it["evidence_id"]), it["city"], it["country"])
    start = it["prompt"].find(ev)  # the evidence sentence inside the prompt
    it["context_span"] = attention.token_span(tok, it["prompt"], ev, add_special_tokens=plain)
    it["evidence_span"] = attention.token_span(tok, it["prompt"], it["country"], start=start, add_special_tokens=plain)
    it["role"] = scored_facts[it["fact"]]["role"]
print(f"{len(items)} RAG prompts ({sum(i['role'] == 'target' for i in items)} target, "
      f"{sum(i['role'] == 'retain' for i in items)} retain); mean length {np.mean([len(i['prompt_ids']) for i in items]):.0f} tokens, "
      f"context {np.mean([len(i['context_span']) for i in items]):.1f} tokens, evidence {np.mean([len(i['evidence_span']) for i in items]):.2f}")

# %%
att = {}
for arm in ARMS:
    lm = original if arm == "original" else jobs.load_arm(P, arm, study)[0]
    att[arm] = attention.prediction_attention(lm, [i["prompt_ids"] for i in items], P["eval_batch_size"] // 2,
                                              tok.pad_token_id, desc=f"attention {arm}")
    if arm != "original":
        del lm
N_BLOCKS, N_HEADS = att["original"][0].shape[:2]

# %% [markdown]
# ## The measures per prompt, layer and arm

# %%
records = []
for arm in ARMS:
    for it, a in zip(items, att[arm]):
        mean_heads = a.mean(1)  # [blocks, tokens]
        ev_w = mean_heads[:, it["evidence_span"]].sum(-1)
        ctx = mean_heads[:, it["context_span"]]
        for block in range(N_BLOCKS):
            records.append({"arm": arm, "role": it["role"], "fact": it["city"], "template": it["question_id"],
                            "block": block, "layer": block + 1, "evidence_weight": ev_w[block],
                            "context_weight": ctx[block].sum(),
                            "entropy_all": attention.attention_entropy(mean_heads[block]),
                            "entropy_context": attention.attention_entropy(ctx[block]),
                            "n_tokens": mean_heads.shape[1], "n_context_tokens": ctx.shape[1]})
MEASURES = ["evidence_weight", "context_weight", "entropy_all", "entropy_context"]
measures = pd.DataFrame(records).astype({m: np.float64 for m in MEASURES})  # averaged in float64, as written to the CSVs
outputs.write_table(P, "06_attention_by_layer", measures.groupby(["arm", "role", "layer"]).mean(numeric_only=True).reset_index())

# %% [markdown]
# ## Figure 3: one RAG prompt, Just-RAG vs RLCP
# The example follows a rule, not a choice: the target whose country is Germany when there is one (the
# paper's example), otherwise the first target; the first training template. Rows: each head and their
# mean; columns: the context tokens; entropy of each row over these tokens (nats) at the right.

# %%
pick = next((i for i, it in enumerate(items) if it["country"] == "Germany" and it["role"] == "target"), 0)
ex = items[pick]
print(ex["prompt"])
labels = [tok.decode([ex["prompt_ids"][k]]) for k in ex["context_span"]]
pair = [a for a in ["just_rag", "rlcp"] if a in ARMS] or ARMS[:1]
fig, axes = plt.subplots(1, len(pair), figsize=(7 * len(pair), 4.2))
axes = np.atleast_1d(axes)
for ax, arm in zip(axes, pair):
    a = att[arm][pick][BLOCK][:, ex["context_span"]]  # heads x context tokens
    grid = np.vstack([a, a.mean(0, keepdims=True)])
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0)
    ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=8)
    names = [f"head {h}" for h in range(N_HEADS)] + ["mean"]
    ax.set_yticks(range(N_HEADS + 1), [f"{n}  H={attention.attention_entropy(row):.2f}" for n, row in zip(names, grid)], fontsize=7)
    full_h = attention.attention_entropy(att[arm][pick][BLOCK].mean(0))
    ax.set_title(f"{arm}: layer {LSTAR}, '{ex['city']}' → '{ex['country']}'\n"
                 f"head-mean entropy over context {attention.attention_entropy(grid[-1]):.2f} nats, over all tokens {full_h:.2f}",
                 fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
fig.tight_layout()
outputs.save_figure(P, fig, "06_fig3_attention_heatmap")
plt.show()

# %% [markdown]
# ## Figure 4: attention on the evidence at the prediction step, every prompt
# Left: at layer l\*, head-averaged evidence weight per prompt for each arm (targets and retain facts),
# mean and 95% bootstrap interval over facts. Right: the same mean across all layers, so the reader sees
# whether layer l\* is special.

# %%
at_l = measures[measures.layer == LSTAR]
outputs.write_table(P, "06_attention_per_prompt_at_lstar", at_l)  # what the record's rows average (study/recompute.py)
summary = []
for arm in ARMS:
    for role in ["target", "retain"]:
        d = at_l[(at_l.arm == arm) & (at_l.role == role)]
        for metric in MEASURES:
            per_fact = d.groupby("fact")[metric].mean().to_numpy()
            mean, lo, hi = evaluate.bootstrap_ci(per_fact, P["n_bootstrap"], P["seed"])
            summary.append({"arm": arm, "role": role, "metric": metric, "value": mean, "ci_low": lo, "ci_high": hi,
                            "n_facts": len(per_fact), "n_prompts": len(d),
                            "uniform_reference": float(np.mean(d.n_context_tokens.map(np.log))) if metric == "entropy_context" else
                            float(np.mean(np.log(d.n_tokens))) if metric == "entropy_all" else np.nan})
summary = pd.DataFrame(summary)
outputs.write_table(P, "06_attention_at_lstar", summary)

COLORS = plots.ARM_COLORS
fig, axes = plt.subplots(1, 2, figsize=(14, 4.2))
for k, role in enumerate(["target", "retain"]):
    for j, arm in enumerate(ARMS):
        d = at_l[(at_l.arm == arm) & (at_l.role == role)].groupby("fact").evidence_weight.mean()
        x = j + (k - 0.5) * 0.35
        axes[0].scatter(np.full(len(d), x) + np.random.default_rng(j).uniform(-0.06, 0.06, len(d)), d, s=10,
                        color=COLORS[arm], alpha=0.6, marker="o" if role == "target" else "^")
        s = summary[(summary.arm == arm) & (summary.role == role) & (summary.metric == "evidence_weight")].iloc[0]
        axes[0].errorbar(x, s.value, yerr=[[s.value - s.ci_low], [s.ci_high - s.value]], color="k", capsize=4, fmt="_", ms=14)
axes[0].set_xticks(range(len(ARMS)), ARMS)
axes[0].set_ylabel(f"attention on the evidence token(s), layer {LSTAR}")
axes[0].set_title("per fact (o targets, ^ retain), mean and 95% CI", fontsize=9)
for arm in ARMS:
    d = measures[(measures.arm == arm) & (measures.role == "target")].groupby("layer").evidence_weight.mean()
    axes[1].plot(d.index, d.values, color=COLORS[arm], label=arm)
axes[1].axvline(LSTAR, color="k", lw=0.6, alpha=0.4)
axes[1].set_xlabel("layer (block output index)")
axes[1].set_ylabel("mean evidence weight (targets)")
axes[1].legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "06_fig4_evidence_weight")
plt.show()

# %% [markdown]
# ## Into `results/06_attention.csv`
# `attention.<measure>.<role>` at l\* per arm (mean over facts, 95% bootstrap interval over facts; entropies
# in nats), and where each arm's evidence weight on the targets peaks across layers
# (`attention.peak_evidence_layer`, `attention.peak_evidence_weight`: mean over target prompts per layer).

# %%
result_rows = []
for r in summary.itertuples():
    result_rows.append(result_row(r.arm, f"attention.{r.metric}.{r.role}", r.value, ci_low=float(r.ci_low),
                                  ci_high=float(r.ci_high), interval="95% bootstrap over facts", unit="facts",
                                  n_units=int(r.n_facts), n_prompts=int(r.n_prompts)))
targets_by_layer = measures.loc[measures.role == "target", ["arm", "fact", "template", "layer", "evidence_weight"]]
outputs.write_table(P, "06_evidence_weight_per_prompt", targets_by_layer)  # what the peak rows read (study/recompute.py)
by_layer = targets_by_layer.groupby(["arm", "layer"]).evidence_weight.mean()
n_target_prompts = sum(it["role"] == "target" for it in items)
for arm in ARMS:
    result_rows.append(result_row(arm, "attention.peak_evidence_layer", by_layer[arm].idxmax()))  # a layer index
    result_rows.append(result_row(arm, "attention.peak_evidence_weight", by_layer[arm].max(), unit="facts",
                                  n_units=len(study.targets), n_prompts=n_target_prompts))
results.write(P, "06_attention", result_rows)
print(f"attention of layer {LSTAR} (block {BLOCK}); entropies in nats")
summary.assign(cell=[f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in zip(summary.value, summary.ci_low, summary.ci_high)]) \
    .pivot(index=["role", "metric"], columns="arm", values="cell")[ARMS]

# %%
def val(arm, metric, role="target"):
    r = summary[(summary.arm == arm) & (summary.role == role) & (summary.metric == metric)].iloc[0]
    return f"{r.value:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"


lines = [f"Layer {LSTAR}, prediction step, heads averaged, targets (paper: Just-RAG H = 1.59, RLCP H = 0.90; evidence "
         f"weight ≈ 0.7 RLCP vs < 0.1 baseline):", ""]
for arm in ARMS:
    lines.append(f"- **{arm}**: evidence weight {val(arm, 'evidence_weight')}, entropy over the context {val(arm, 'entropy_context')} "
                 f"nats, over all tokens {val(arm, 'entropy_all')} nats; evidence weight peaks at layer "
                 f"{int(by_layer[arm].idxmax())} ({by_layer[arm].max():.2f}).")
display(Markdown("\n".join(lines)))
