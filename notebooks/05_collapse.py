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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/05_collapse.ipynb)
#
# # 05 · Do entities collapse into type centroids? (Figures 1 and 2)
#
# The paper shows a t-SNE of layer-l\* states in which RLCP's cities (red) and fruits (green) are
# intermixed (Figure 1), and describes entities collapsing into "type centroids": the model keeps *this
# is a city* but loses *which city* (Figure 2). t-SNE can invent or hide clusters, so the claim is carried
# here by three numbers, computed before (original) and after (each arm), with the pictures as
# illustration:
#
# 1. **Identity within a type**: leave-one-frame-out nearest neighbour: is the state of "Rome" in one
#    sentence closest to "Rome" in another sentence? (No training, so no probe capacity to argue about.)
# 2. **Type between entities**: a linear type probe (city / fruit / number) tested on *held-out entities*,
#    and the silhouette of the type labels.
# 3. **Collapse ratio**: mean distance of an entity to its type centroid ÷ mean distance between type
#    centroids. Collapse into type centroids drives it to 0; the paper's Figure 1 (types intermixed) would
#    instead push the silhouette and the type probe down.
#
# The paper does not say which prompts its states come from, so two readings are measured:
# - **entity**: the entity's own last token inside five neutral sentences ("Tell me about Rome"): the
#   model's representation of the entity itself;
# - **question**: the last token of the study's no-context questions with the entity in the city's place
#   ("Rome is a city in the country of", also "apple is a city in …" for the other types): the position
#   that RLCP's adversary and unlikelihood term act on.
#
# This notebook analyses one trained model per arm, the first training seed (`seeds[0]`): its geometry and
# pictures cost minutes per model, so the seed spread is reported by 02/03 on Table 1's metrics; every row of
# `results/05_collapse.csv` says n_seeds = 1 (0 for the untrained original).
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
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.model_selection import GroupKFold

from rlcp_utils.core import notebook, outputs, plots, results
from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate, probing
from rlcp_utils.training import jobs

P = notebook.start("05_collapse", globals())
study = facts.load_study_data(P)
ARMS = ["original"] + list(P["arms"])
LSTAR = P["probe_layer"]
print(f"arms {ARMS} (trained arms: training seed {P['seeds'][0]}), layer l* = {LSTAR}")


def result_row(arm: str, metric: str, value, **fields) -> dict:
    return results.analysis_row(P, arm, metric, value, **fields)


# %% [markdown]
# ## Entities and the two contexts
# Cities: the target cities (what RLCP trained on) and, to fill the type to the size of the others, the
# first retain cities. Fruits and numbers from 01_data. *entity* context: each entity at the end of five
# neutral sentences (the chat template's user turn, the same for every type), state at the entity's last
# token, so nothing after it leaks in. *question* context: the first five training question templates in
# the study's prompt format, state at the last prompt token.

# %%
FRAMES = ["Tell me about {entity}", "I keep thinking about {entity}", "Write one sentence about {entity}",
          "What comes to mind when you hear {entity}", "The word of the day is {entity}"]
QUESTIONS = [q for q in study.questions if q.split == "train"][: len(FRAMES)]
FRAMES = FRAMES[: len(QUESTIONS)]  # one question per frame (the smoke profile has fewer training questions)
n_per_type = min(sum(c["type"] == "fruit" for c in study.controls), sum(c["type"] == "number" for c in study.controls))
cities = [{"entity": t["city"], "type": "city", "role": "target"} for t in study.targets]
cities += [{"entity": r["city"], "type": "city", "role": "retain"} for r in study.retain[: max(0, n_per_type - len(cities))]]
entities = cities + [dict(c, role="control") for c in study.controls]
original, tok, _ = jobs.load_arm(P, "original", study)
plain = study.prompt_format == "plain"


def neutral_prompt(entity: str, frame: str) -> str:
    user = frame.format(entity=entity)
    if study.prompt_format == "chat":
        return tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=False)
    return user


table = pd.DataFrame([{**e, "frame": f} for e in entities for f in range(len(FRAMES))])
CONTEXTS = {}
texts = [neutral_prompt(r.entity, FRAMES[r.frame]) for r in table.itertuples()]
CONTEXTS["entity"] = ([tok(t, add_special_tokens=plain).input_ids for t in texts],
                      [probing.last_token_of(tok, t, r.entity, add_special_tokens=plain) for t, r in zip(texts, table.itertuples())])
texts = [facts.render(tok, facts.question(QUESTIONS[r.frame], r.entity), study.prompt_format) for r in table.itertuples()]
CONTEXTS["question"] = ([facts.encode_prompt(tok, t, study.prompt_format) for t in texts], [-1] * len(texts))
print(f"{table.entity.nunique()} entities ({table.drop_duplicates('entity').type.value_counts().to_dict()}) x {len(FRAMES)} frames "
      f"x {len(CONTEXTS)} contexts")

# %%
states = {ctx: {} for ctx in CONTEXTS}
for arm in ARMS:
    lm = original if arm == "original" else jobs.load_arm(P, arm, study)[0]
    for ctx, (ids, pos) in CONTEXTS.items():
        states[ctx][arm] = probing.hidden_states_at(lm, ids, {"at": pos}, P["eval_batch_size"], tok.pad_token_id,
                                                    desc=f"{ctx} states {arm}")["at"]
    if arm != "original":
        del lm
N_LAYERS = states["entity"]["original"].shape[1]

# %% [markdown]
# ## The three numbers, at every layer
# Identity nearest neighbour per type (chance: 1 over the number of entities, since the neighbour is
# searched among all of them); type probe on held-out entities (5 folds over entities, chance 1/3) at l*;
# silhouette; collapse ratio. Per-frame values give the spread of the geometry numbers.
#
# In the question context, layer 0 (the embedding output) holds the embedding of the last prompt token,
# which is the same token in every prompt: all states there are one vector, so the ratio (0 ÷ 0), the
# silhouette and the nearest neighbour (all ties) are undefined. They are reported as NaN (a gap in the
# curves), not as the numbers that rounding noise would give.

# %%
types = table.type.to_numpy()
entity = table.entity.to_numpy()
frame = table.frame.to_numpy()
n_entities = table.entity.nunique()
is_target_city = (table.role == "target").to_numpy()


def type_probe_accuracy(X: np.ndarray) -> np.ndarray:
    """Per row: predicted type correct, with the row's entity held out (grouped folds over entities)."""
    correct = np.zeros(len(X), bool)
    for tr, te in GroupKFold(n_splits=5).split(X, types, entity):
        correct[te] = probing.linear_probe(X[tr], types[tr], frame[tr], X[te]) == types[te]
    return correct


rows = []
for ctx in CONTEXTS:
    for arm in ARMS:
        for layer in range(N_LAYERS):
            X = states[ctx][arm][:, layer]
            nn = probing.identity_nearest_neighbour(X, entity, frame)
            per_frame = [probing.type_geometry(X[frame == f], types[frame == f]) for f in range(len(FRAMES))]
            rows.append({"context": ctx, "arm": arm, "layer": layer, "identity_nn_city_target": nn[is_target_city].mean(),
                         **{f"identity_nn_{t}": nn[types == t].mean() for t in ["city", "fruit", "number"]},
                         "within_to_between": np.mean([g["within_to_between"] for g in per_frame]),
                         "within_to_between_std": np.std([g["within_to_between"] for g in per_frame]),
                         "silhouette": np.mean([g["silhouette"] for g in per_frame]),
                         "silhouette_std": np.std([g["silhouette"] for g in per_frame])})
by_layer = pd.DataFrame(rows)
outputs.write_table(P, "05_geometry_by_layer", by_layer)

COLORS = plots.ARM_COLORS
fig, axes = plt.subplots(2, 3, figsize=(15, 7.5), sharex=True)
for r, ctx in enumerate(CONTEXTS):
    for arm in ARMS:
        d = by_layer[(by_layer.arm == arm) & (by_layer.context == ctx)]
        axes[r, 0].plot(d.layer, d.identity_nn_city_target, color=COLORS[arm], label=arm)
        axes[r, 1].plot(d.layer, d.within_to_between, color=COLORS[arm], label=arm)  # NaN (undefined) leaves a gap
        axes[r, 2].plot(d.layer, d.silhouette, color=COLORS[arm], label=arm)
    axes[r, 0].axhline(1 / n_entities, color="k", ls="--", lw=0.8, label=f"chance 1/{n_entities}")
    axes[r, 0].set_ylabel(f"[{ctx}] identity nearest neighbour\n(target cities, across frames)")
    axes[r, 1].set_ylabel(f"[{ctx}] within-type ÷ between-centroid")
    axes[r, 2].set_ylabel(f"[{ctx}] silhouette of types")
    for ax in axes[r]:
        ax.axvline(LSTAR, color="k", lw=0.6, alpha=0.4)
        ax.set_xlabel("layer (0 = embeddings)")
axes[0, 0].legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "05_geometry_by_layer")
plt.show()

# %% [markdown]
# ## At layer l\*, with spreads
# Written to `results/05_collapse.csv` as `collapse.<context>.<metric>`, one row per arm.

# %%
summary, outcomes = [], []
for ctx in CONTEXTS:
    for arm in ARMS:
        X = states[ctx][arm][:, LSTAR]
        nn = probing.identity_nearest_neighbour(X, entity, frame)
        tp = type_probe_accuracy(X)
        outcomes.append(pd.DataFrame({"context": ctx, "arm": arm, "entity": entity, "type": types, "target_city": is_target_city,
                                      "identity_nn": nn, "type_probe": tp}))
        for name, ok, mask, chance in [
            ("identity_nn.city_target", nn, is_target_city, 1 / n_entities),
            ("identity_nn.fruit", nn, types == "fruit", 1 / n_entities),
            ("identity_nn.number", nn, types == "number", 1 / n_entities),
            ("type_probe_heldout_entities", tp, np.ones(len(tp), bool), 1 / 3),
        ]:
            per_entity = pd.Series(ok[mask]).groupby(entity[mask]).mean().to_numpy()
            mean, lo, hi = evaluate.bootstrap_ci(per_entity, P["n_bootstrap"], P["seed"])
            summary.append({"context": ctx, "arm": arm, "metric": name, "value": mean, "ci_low": lo, "ci_high": hi,
                            "chance": chance, "n_entities": len(per_entity), "n_states": int(mask.sum()),
                            "spread": "95% bootstrap over entities"})
        d = by_layer[(by_layer.arm == arm) & (by_layer.layer == LSTAR) & (by_layer.context == ctx)].iloc[0]
        for name in ["within_to_between", "silhouette"]:
            summary.append({"context": ctx, "arm": arm, "metric": name, "value": d[name], "ci_low": d[name] - d[f"{name}_std"],
                            "ci_high": d[name] + d[f"{name}_std"], "chance": np.nan, "n_entities": n_entities,
                            "n_states": len(table), "spread": f"mean ± std over {len(FRAMES)} frames"})
summary = pd.DataFrame(summary)
outputs.write_table(P, "05_collapse_at_lstar", summary)
outputs.write_table(P, "05_outcomes_at_lstar", pd.concat(outcomes, ignore_index=True))  # per state (study/recompute.py)
result_rows = []
for r in summary.itertuples():
    if np.isnan(r.value):  # undefined at this layer (all states identical): no number to record
        print(f"not recorded: collapse.{r.context}.{r.metric} of {r.arm} is undefined at layer {LSTAR}")
        continue
    result_rows.append(result_row(r.arm, f"collapse.{r.context}.{r.metric}", r.value, ci_low=float(r.ci_low),
                                  ci_high=float(r.ci_high), interval=r.spread,
                                  chance=None if np.isnan(r.chance) else float(r.chance), unit="entities",
                                  n_units=int(r.n_entities), n_prompts=int(r.n_states)))
results.write(P, "05_collapse", result_rows)
summary.assign(cell=[f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in zip(summary.value, summary.ci_low, summary.ci_high)]) \
    .pivot(index=["context", "metric"], columns="arm", values="cell")[ARMS]

# %% [markdown]
# ## Figure 1: t-SNE of cities (red) and fruits (green), and a PCA check
# Same perplexity, seed and initialisation (PCA) for every arm; each panel is fitted separately (t-SNE
# has no shared axes). PCA is linear and deterministic: if t-SNE's picture is real, PCA should not
# contradict it. Rows: each context, t-SNE then PCA.

# %%
show = ["original"] + [a for a in ["just_rag", "unlikelihood", "rlcp"] if a in ARMS]
TYPE_COLORS = {"city": "tab:red", "fruit": "tab:green", "number": "tab:blue"}
fig, axes = plt.subplots(2 * len(CONTEXTS), len(show), figsize=(4.2 * len(show), 4 * 2 * len(CONTEXTS)))
axes = np.atleast_2d(axes)
cf = np.isin(types, ["city", "fruit"])
perplexity = min(P["tsne_perplexity"], (cf.sum() - 1) / 3)
for k, ctx in enumerate(CONTEXTS):
    for c, arm in enumerate(show):
        X = states[ctx][arm][:, LSTAR]
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=P["seed"]).fit_transform(X[cf])
        pcs = PCA(n_components=2).fit_transform(X[cf])
        for r, (Y, name) in enumerate([(emb, f"t-SNE (perplexity {perplexity:g})"), (pcs, "PCA")]):
            ax = axes[2 * k + r, c]
            for t in ["city", "fruit"]:
                m = types[cf] == t
                ax.scatter(Y[m, 0], Y[m, 1], s=12, color=TYPE_COLORS[t], label=f"{t} ({m.sum()} states)", alpha=0.8)
            ax.set_title(f"{arm}, {ctx} context: {name}, layer {LSTAR}", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
axes[0, 0].legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "05_fig1_tsne_cities_fruits")
plt.show()

# %% [markdown]
# ## Figure 2: entities and their type centroids (PCA of all three types)
# Each entity is the mean of its five frame states; crosses mark type centroids. Collapse would show as
# each type's entities drawn into its cross.

# %%
fig, axes = plt.subplots(len(CONTEXTS), len(show), figsize=(4.2 * len(show), 4 * len(CONTEXTS)))
axes = np.atleast_2d(axes)
for k, ctx in enumerate(CONTEXTS):
    for ax, arm in zip(axes[k], show):
        X = states[ctx][arm][:, LSTAR]
        means = pd.DataFrame(X).groupby(entity).mean()
        kind = table.drop_duplicates("entity").set_index("entity").loc[means.index, "type"].to_numpy()
        Y = PCA(n_components=2).fit_transform(means.to_numpy())
        for t, col in TYPE_COLORS.items():
            ax.scatter(Y[kind == t, 0], Y[kind == t, 1], s=14, color=col, alpha=0.7, label=t)
            ax.scatter(*Y[kind == t].mean(0), marker="x", s=120, color=col, linewidths=3)
        ratio = by_layer[(by_layer.arm == arm) & (by_layer.layer == LSTAR) & (by_layer.context == ctx)].within_to_between.iloc[0]
        ax.set_title(f"{arm}, {ctx} context: within/between = {ratio:.2f}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
axes[0, 0].legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "05_fig2_type_centroids_pca")
plt.show()

# %% [markdown]
# ## What the numbers say

# %%
def cell(ctx, arm, metric):
    r = summary[(summary.context == ctx) & (summary.arm == arm) & (summary.metric == metric)].iloc[0]
    return f"{r.value:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"


lines = [f"Layer l* = {LSTAR}; identity nearest-neighbour chance 1/{n_entities}, type-probe chance 1/3.", ""]
for ctx in CONTEXTS:
    for arm in ARMS:
        lines.append(f"- **{arm}, {ctx} context**: target-city identity NN {cell(ctx, arm, 'identity_nn.city_target')}, fruit "
                     f"identity NN {cell(ctx, arm, 'identity_nn.fruit')}; type probe on held-out entities "
                     f"{cell(ctx, arm, 'type_probe_heldout_entities')}; silhouette {cell(ctx, arm, 'silhouette')}; within/between "
                     f"{cell(ctx, arm, 'within_to_between')}.")
lines += ["", "Collapse into type centroids, as the paper describes it, predicts a lower identity NN for the target cities "
          "and a lower within/between ratio after RLCP than before, with the type probe unchanged; intermixed cities "
          "and fruits (its Figure 1) predict a lower type probe and silhouette. The rows above say which, if either, happened, "
          "and in which context."]
display(Markdown("\n".join(lines)))
