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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/12_gradient_geometry.ipynb)
#
# # 12 · Gradient orthogonality (Assumption 3.1, Proposition 3.2), measured
#
# The paper's argument that forgetting facts spares reasoning rests on Assumption 3.1: the gradient of the
# fact loss is nearly orthogonal to the gradient of a reasoning loss, δ = |cos(∇L_fact, ∇L_logic)| small; and
# Proposition 3.2 bounds how far a step along ∇L_fact moves the reasoning loss. Here δ is measured on the
# original model and along an RLCP run, over all parameters and per parameter group, against two reference
# cosines; and the proposition's first-order prediction is set against a measured step.
#
# **Seeds.** One monitored run: 03's RLCP on the first training seed, retrained with a gradient monitor. The
# first-order test measures the original model (no training seed).
#
# Reads: 01_data, 03_rlcp_training, 07_gsm8k, 09_relearning

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
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from rlcp_utils.core import codehash, config, model, notebook, outputs, results
from rlcp_utils.data import facts
from rlcp_utils.measures import gradients, gsm8k
from rlcp_utils.study import sweeps
from rlcp_utils.training import jobs, loop

P = notebook.start("12_gradient_geometry", globals())
NB = "12_gradient_geometry"
study = facts.load_study_data(P)
retain_train, retain_heldout = facts.split_retain(study.retain)
K = len(study.targets)
FIRST = P["seeds"][0]
reference, tok = model.load_for(P)
config.check_probe_layer(P, reference.config.num_hidden_layers)
inputs = jobs.study_inputs(P, study, reference, tok)
record_rows: list[dict] = []

# %% [markdown]
# ## The reasoning task
# The paper's L_logic is a loss on reasoning the model can do. GSM8K is near the floor for this model (07), so
# we first measure an arithmetic task: single-digit multiplication facts (`rlcp_utils/measures/arithmetic.py`,
# "7 x 8" → "56") under seven wordings in the study's prompt format, and two-step problems that need one fact
# ("7 x 8 + 5", with a scaffold that makes the model state the product first). A fact is *known* when the model
# answers it firmly on at least `known_threshold` of the training wordings (01's rule, with its
# margin `screen_margin`; `rlcp_utils/measures/screening.py`). Notebook 14 forgets these
# facts, on the same screening (`sweeps.arithmetic_task`).

# %%
task = sweeps.arithmetic_task(P, study, reference, tok)
known, two_step = task.known, task.two_step
print(f"multiplication facts 2..{P['arith_max_factor']}: {len(task.facts)}; no-context recall on the training wordings "
      f"{task.recall.mean():.1%}; known (>= {P['known_threshold']:.0%} of the wordings, margin {P['screen_margin']}): {len(known)}")
print(f"two-step problems: {len(two_step)}; the original gets the product right on {task.original.product_right.mean():.1%} "
      f"and the final answer on {task.original.answer_right.mean():.1%} (chance {task.chance:.1%})")

# %% [markdown]
# ## The losses
# With the `gradient_prompts` prompts behind each (fixed before training):
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
solved = [p for p, ok in zip(two_step, task.original.answer_right) if ok]
logic_a = pick([p for p in solved if p["city"] in known_half], n_g, 4)
logic_b = pick([p for p in solved if p["city"] in {f["city"] for f in known[1::2]}], n_g, 5)
if not logic_a or not logic_b:
    raise RuntimeError(f"the original solves {len(solved)} two-step problems, too few to split in two: raise arith_addends")
gsm_train = pick(gsm8k.load_problems()[-2 * P["lm_loss_texts"]:], n_g, 6)  # from the texts 09 and 10 use (benign relearning, per-token loss)


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
# each pair's name in the results record (gradients.cosine.<name>.start/end, what the claims read)
PAIR_METRIC = {"fact vs logic (δ)": "fact_vs_logic", "fact vs GSM8K": "fact_vs_GSM8K",
               "fact vs other half of the targets": "fact_vs_other_half_of_the_targets", "fact vs other facts": "fact_vs_other_facts",
               "logic vs its other half": "logic_vs_its_other_half"}
n_steps = len(loop.epoch_schedule(inputs.items, K, P["epochs"], P["batch_size"], FIRST))  # the monitor also measures the end
n_inputs = {"fact": len(fact_a), "fact_other_half": len(fact_b), "other_facts": len(unrelated), "logic": len(logic_a),
            "logic_other_half": len(logic_b), "gsm8k": len(gsm_train)}
monitor_spec = {"every": P["gradient_every"], "last": n_steps, "pairs": PAIRS,
                "code": codehash.computing_code_sha256(["rlcp_utils.measures.gradients"]), "inputs": hashlib.sha256(json.dumps(
    [[i["prompt"] for i in fact_a + fact_b + unrelated], [p["question"] for p in logic_a + logic_b], [p["index"] for p in gsm_train]]
).encode()).hexdigest()[:16]}
print(f"gradient losses: {len(fact_a)} + {len(fact_b)} target prompts, {len(unrelated)} other-fact prompts, "
      f"{len(logic_a)} + {len(logic_b)} two-step problems, {len(gsm_train)} GSM8K solutions")

# %% [markdown]
# ## Cosines along RLCP

# %%
grad_job = jobs.run_job(P, "rlcp", FIRST, study, inputs, name="rlcp_gradients", notebook=NB,
                        monitor=gradients.monitor(LOSSES, PAIRS, P["gradient_every"], last=n_steps), key_extra=monitor_spec)
grad_rows = grad_job["monitor"]
assert grad_rows.step.min() == 0 and grad_rows.step.max() == n_steps, "the monitor missed the start or the end of training"
rlcp_first = sweeps.rlcp_runs(P, study, inputs, [FIRST], NB)[FIRST]
same = pd.DataFrame(grad_job["rows"]).set_index("metric").value.sub(pd.DataFrame(rlcp_first["rows"]).set_index("metric").value)
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
outputs.save_figure(P, fig, "12_gradients")
plt.show()
for pair in PAIRS:  # the end of the monitored run, in the training precision (the start is recorded below, in fp32)
    record_rows.append({"arm": "rlcp_gradients", "seed": str(FIRST), "metric": f"gradients.cosine.{PAIR_METRIC[pair]}.end",
                        "value": float(cos_all.loc[steps[-1], pair]), "n_prompts": min(n_inputs[k] for k in PAIRS[pair]),
                        "n_seeds": 1})

# %% [markdown]
# ## Proposition 3.2, tested directly
# On the original model, in fp32: one plain step of size η along
# ∇L_fact, both ways (descent, the proposition's Δθ = −η∇L_fact, and ascent, the direction in which
# unlikelihood forgets), the measured change of L_logic (and of L_GSM8K), its first-order prediction
# ±η⟨∇L_fact, ∇L_logic⟩, and the proposition's bound η·δ·‖∇L_fact‖·‖∇L_logic‖. With δ the measured |cos|, the
# bound *is* the size of the first-order change (Cauchy–Schwarz with equality): the proposition holds to first
# order by construction, and what a step can test is whether the O(η²) terms stay small at a given η, that is
# whether |measured| ÷ bound stays near 1 or below. Whether δ itself is small is Assumption 3.1 (above). For
# comparison, the change of L_fact itself (≈ ∓η‖∇L_fact‖²).

# %%
fp32_model, _ = model.load_for(config.profile_with(P, precision="fp32"))
# δ and the reference cosines of the original model, once, in fp32: the start values of the record and the δ of the
# bound below are one number (the monitor's step 0 above is the same model in the training precision)
start = pd.DataFrame(gradients.monitor(LOSSES, PAIRS, every=1)(0, fp32_model))
start = start[(start.measure == "cosine") & (start.group == "all")].set_index("of").value
for pair in PAIRS:
    record_rows.append({"arm": "original", "seed": "all", "metric": f"gradients.cosine.{PAIR_METRIC[pair]}.start",
                        "value": float(start[pair]), "n_prompts": min(n_inputs[k] for k in PAIRS[pair]), "n_seeds": 0})
display(Markdown(f"The original model's cosines in fp32 (the record's start values) and at step 0 of the monitor "
                 f"({model.precision_of(P)}):"))
display(pd.DataFrame({"fp32 (the record)": start[list(PAIRS)],
                      f"monitor, step 0 ({model.precision_of(P)})": cos_all.loc[steps[0], list(PAIRS)]}).round(4))
first_order = []
for out in gradients.first_order_steps(fp32_model, LOSSES["fact"], {k: LOSSES[k] for k in ["logic", "gsm8k", "fact"]},
                                      P["first_order_etas"], [-1, 1]):
    first_order.append({"η": out.pop("eta"), "step": {-1: "descent", 1: "ascent"}[out.pop("direction")], "L moved": out.pop("moved"),
                        **out, "|measured| ÷ bound": abs(out["measured_change"]) / out["bound"] if out["bound"] > 0 else np.nan})
first_order = pd.DataFrame(first_order)
del fp32_model
outputs.write_table(P, "12_first_order", first_order)
delta = first_order[first_order["L moved"] == "logic"].delta
assert np.allclose(delta, abs(start["fact vs logic (δ)"]), rtol=1e-6), "the bound's δ is not the recorded start δ"
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

# %%
results.write(P, NB, record_rows)
print(f"{len(record_rows)} rows written to the results record")
