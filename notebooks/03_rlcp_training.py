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
# Baselines (02) use the same loop with some weights set to zero. RLCP is trained once per training seed
# (`seeds`) on every fact draw (`fact_draws`), each (arm, draw, seed) an independent job. This notebook then
# regenerates the paper's **Table 1** from all four arms, every number a mean over fact draws and seeds with an
# interval that includes how much the outcome moves with the facts drawn and with the training seed, and judges the Table 1 claims with the study's one set of rules (`rlcp_utils/study/claims.py`, the
# same rules as the report, 15_report).
#
# Reads: 01_data, 02_baselines

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
import torch
from IPython.display import Markdown, display

from rlcp_utils.core import config, model, notebook, outputs, plots, results
from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate
from rlcp_utils.methods import rlcp
from rlcp_utils.training import dispatch, jobs
from rlcp_utils.study import claims

P = notebook.start("03_rlcp_training", globals())
studies = facts.load_study_draws(P)
study = studies[0]  # the study's draw
print(f"{len(study.targets)} targets, probe layer {P['probe_layer']}, training seeds {P['seeds']}, fact draws {len(studies)}, "
      f"prompt format {study.prompt_format!r}")
pd.Series({k: P[k] for k in ["epochs", "batch_size", "learning_rate", "probe_learning_rate", "lambda_rag", "lambda_adv",
                             "unlikelihood_weight", "lambda_kl", "kl_on_answer", "max_grad_norm"]}).to_frame("value")

# %% [markdown]
# ## The gradient reversal layer, forward and backward
# The GRL is the identity in the forward pass and multiplies the gradient by −α in the backward pass, so the
# probe *descends* L_P while the backbone below it *ascends* it. Its whole implementation
# (`rlcp_utils/methods/rlcp.py`), with the paper's ramp of α:
#
# <!-- shows: rlcp_utils.methods.rlcp._GradReverse -->
# ```python
# class _GradReverse(torch.autograd.Function):
#     @staticmethod
#     def forward(ctx, x, alpha):
#         ctx.alpha = alpha
#         return x.view_as(x)
#
#     @staticmethod
#     def backward(ctx, grad):
#         return -ctx.alpha * grad, None
# ```
#
# <!-- shows: rlcp_utils.methods.rlcp.alpha_schedule -->
# ```python
# def alpha_schedule(progress: float) -> float:
#     """The paper's sigmoid ramp: 0 at the start, 0.987 at the end (p = 1)."""
#     return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0
# ```
#
# A check on a tensor: the forward output equals the input, the gradient arriving at the input is −α times
# the gradient that a plain identity would pass.

# %%
# NBVAL_CHECK_OUTPUT: `make test` compares this output with the one stored in the notebook (a closed form)
h = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
alpha = rlcp.alpha_schedule(0.5)
out = rlcp.gradient_reversal(h, alpha)
(out * torch.tensor([0.5, 1.0, 2.0])).sum().backward()
pd.DataFrame({"input h": h.detach(), "forward output": out.detach(), "upstream gradient": [0.5, 1.0, 2.0],
              f"gradient at h (alpha = {alpha:.3f})": h.grad})

# %% [markdown]
# ## The loss of one step, as implemented
# The function below is the whole of Algorithm 1's inner loop body (steps 3-6); read it next to the paper.
# `step` holds one batch of target items (x_no and x_rag with the answer), the frozen model's log-probabilities
# at the KL positions and α; the pieces it calls are in `rlcp_utils/methods/common.py` (the forward pass of
# x_no with the chat-template prefix run once, the state at layer l*, the KL and the RAG cross-entropy). The
# training loop (`rlcp_utils/training/loop.py`) is the same for every arm: batches, AdamW, clipping, logging.
#
# <!-- shows: rlcp_utils.methods.rlcp.rlcp_loss -->
# ```python
# def rlcp_loss(model, probe, step: Step, w: Weights) -> dict[str, torch.Tensor]:
#     """Algorithm 1's inner loop body (steps 3-6) on one batch; 'total' is what the optimizer minimises."""
#     out = no_context_pass(model, step, full_logits=w.lambda_kl > 0)  # x_no: states of every layer, logits
#     h = probe_state(out, step)                                       # layer l*, last token of x_no
#     labels = step.labels(h.device)
#     probe_logits = probe(gradient_reversal(h, step.alpha))           # the adversary reads h through the GRL
#     l_probe = F.cross_entropy(probe_logits, labels)                  # L_P: probe descends, backbone ascends
#     total = w.lambda_adv * l_probe
#     ce_no = answer_ce(out.logits, out.ids, out.prompt_lens, step.answer_lens)
#     l_l = -w.unlikelihood_weight * ce_no                             # L_L: push the no-context answer down
#     total = total + l_l
#     l_kl = kl_term(out, step) if w.lambda_kl > 0 else torch.zeros((), device=h.device)  # repair on x_no (11 sweeps it)
#     total = total + w.lambda_kl * l_kl
#     l_rag = rag_ce(model, step)                                      # L_RAG: answer given the evidence
#     total = total + w.lambda_rag * l_rag
#     return {"total": total, "l_rag": l_rag, "l_probe": l_probe.detach(), "l_unlikelihood": l_l, "ce_no_context": ce_no,
#             "l_kl": l_kl, "adversary_acc": probe_accuracy(probe_logits, labels)}
# ```

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
reference, tok = model.load_for(P)
config.check_probe_layer(P, reference.config.num_hidden_layers)
inputs = jobs.study_inputs(P, study, reference, tok)
del reference
run = dispatch.run_arms(P, ["rlcp"], studies, inputs, desc="03_rlcp_training")["rlcp"] if "rlcp" in P["arms"] else {"rows": [], "by_draw": {}}
results.write(P, "03_rlcp_training", run["rows"])
pd.DataFrame([{"arm": "rlcp", "fact draw": d, "seed": seed, "trained now": j["trained"], "training minutes": round(j["seconds"] / 60, 1)}
              for d, by_seed in run["by_draw"].items() for seed, j in by_seed["jobs"].items()])

# %%
logs = {(arm, seed): jobs.train_log(P, arm, seed) for arm in P["arms"] for seed in P["seeds"]}
fig = plots.training_curves(logs, len(study.targets))
outputs.save_figure(P, fig, "03_training_curves")
plt.show()
K = len(study.targets)
tails = pd.DataFrame([{"arm": arm, "seed": seed, "adversary batch accuracy": log.tail(max(1, len(log) // 10)).adversary_acc.mean(),
                       "adversary loss": log.tail(max(1, len(log) // 10)).l_probe.mean(),
                       "CE of the answer, no context": log.tail(max(1, len(log) // 10)).ce_no_context.mean()}
                      for (arm, seed), log in logs.items()])
print(f"last 10% of the steps of each job; chance: accuracy 1/K = {1 / K:.3f}, loss ln K = {np.log(K):.2f}")
tails.round(3)

# %% [markdown]
# ## What the models say now
# Greedy answers without context for the first three targets and the first three retain facts (a fixed
# rule, not a selection), original model vs RLCP (first training seed): forgetting should replace the
# country, not break the sentence, and should leave the retain facts alone.

# %%
sample = study.targets[:3] + study.retain[:3]
first_q = [q for q in study.questions if q.split == "train"][:1]
sample_items = facts.build_items(tok, sample, first_q, study.prompt_format)
answers = {}
for arm in ["original"] + (["rlcp"] if "rlcp" in P["arms"] else []):
    lm, _, _ = jobs.load_arm(P, arm, study)
    answers[arm if arm == "original" else f"{arm} (seed {P['seeds'][0]})"] = evaluate.greedy_generate(
        lm, tok, [i["prompt_ids"] for i in sample_items], P["max_new_tokens_answer"])
    del lm
pd.DataFrame({"set": ["target"] * 3 + ["retain"] * 3, "question": [i["prompt"].split("\n")[-1] for i in sample_items],
              "expected": [i["answer"] for i in sample_items], **answers})

# %% [markdown]
# ## Table 1, regenerated
# Targets (the facts trained on), training and held-out templates, and the retain facts (never trained on).
# Every trained arm: the mean over fact draws of each draw's mean over training seeds and facts [95% bootstrap
# interval with the draws as the outer unit, then seeds, then facts within each drawn seed: facts are nested in
# draws, and training depends on the whole fact set, so a bootstrap over facts alone would be too narrow], then
# each draw's mean and the range of the per-seed means (every draw's seeds). The original is one untrained model
# (draws, then facts). With one fact draw the interval is the two-level one over seeds and facts. Chance levels
# and n are in `tables/table1.csv`. The paper's numbers are those its
# text gives (its Table 1 body is not in the available text).

# %%
record = results.load(P)
table1 = claims.table1(record)
outputs.write_table(P, "table1", table1)
outputs.atomic_write_text(P.sub("tables") / "table1.md", claims.table1_markdown(table1))
display(Markdown(claims.table1_markdown(table1)))

# %% [markdown]
# ## Which facts were drawn vs which seed trained them
# For every Table 1 number of the trained arms: how far apart the fact draws' means are (each a mean over its
# seeds) and how far apart the seeds of one draw are (the standard deviation of per-seed means within each draw,
# averaged over draws). Where the draw spread is the larger, an interval over seeds and facts of one draw is too
# narrow for the headline; the figure shows every job (dots, one colour per draw) and each draw's mean (bars).
# What a draw changes on the default profile: which city of each target country is the target, and which retain
# facts are scored. The target *countries* are the same in every draw, because only 15 countries have enough known
# cities for a target and its country probe (`eligible_target_countries` in `outputs/bench/screening_default.json`):
# the draw spread is a lower bound on how much other facts would move the numbers.

# %%
spread = claims.draw_spread(record)
outputs.write_table(P, "03_draw_spread", spread)
if len(studies) > 1:
    fig = plots.draw_spread(record, claims.SPREAD_METRICS, [a for a in claims.TABLE1_ARMS if a != "original"])
    outputs.save_figure(P, fig, "03_draw_spread")
    plt.show()
spread.round(3)

# %% [markdown]
# ## The Table 1 claims, judged
# The same rules as the report (08), applied to the intervals above: a verdict is *reproduced* only when
# the whole interval is on the paper's side of its threshold, *not reproduced* when the whole interval is on
# the other side, and *partly* otherwise.

# %%
verdicts = claims.judge(record, section="Forgetting")
outputs.write_table(P, "03_table1_claims", verdicts)
verdicts[["claim", "paper", "ours", "n", "rule", "verdict"]]
