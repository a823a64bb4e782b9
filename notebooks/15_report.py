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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/15_report.ipynb)
#
# # 15 · The report: the paper's claims against our measurements
#
# Reads the results record of 01–14 (`results/*.csv`, one loader: `rlcp_utils.core.results.load`) and writes
# `outputs/<profile>/report.md`: one row per claim of the paper, its number next to ours with chance level,
# n (units, prompts, training seeds) and spread, and a verdict decided by a rule stated in the row
# (reproduced / partly / not reproduced / inconclusive / not measured). The claims and their rules live in
# one place, `rlcp_utils/study/claims.py`; notebook 03 shows the Table 1 subset with the same verdicts. Where a
# trained arm has several seeds, its interval is the two-level bootstrap over seeds and facts, and the range
# of the seed means follows it; the analyses of 04–07 use the first seed only (their rows say n = 1 seed).
# Nothing here is typed by hand: rerun the pipeline and the report follows the numbers.
#
# Reads: 01_data, 02_baselines, 03_rlcp_training, 04_probing, 05_collapse, 06_attention, 07_gsm8k, 08_unlearning, 09_relearning, 10_unlearning_checks, 11_kl_verbosity, 12_gradient_geometry, 13_fact_counts, 14_arithmetic_facts

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
import json

from IPython.display import Markdown, display

from rlcp_utils.core import notebook, outputs, results
from rlcp_utils.study import claims

P = notebook.start("15_report", globals())
record = results.load(P)
manifest = json.loads((P.output_dir / "manifest.json").read_text())
print(f"{len(record)} result rows from {record.notebook.nunique()} notebooks; arms {sorted(record.arm.unique())}")

# %% [markdown]
# ## The claims and the rules that judge them
# Each claim names the metric that tests it and a rule fixed before looking at the numbers (see
# `rlcp_utils/study/claims.py`); "partly" means the direction holds but not the size the paper reports, or only
# one of two conditions holds, or the interval straddles the threshold. The numbers the rules compare with, each
# defined once with its basis (the paper's own number or words, or a convention of this study) and why:

# %%
# NBVAL_CHECK_OUTPUT: `make test` compares this output with the one stored in the notebook (the rules are fixed)
claims.thresholds_table()

# %%
verdicts = claims.judge(record)
outputs.write_table(P, "15_claims", verdicts)
headline = verdicts.rename(columns={"ours": "ours [95% CI]"})[["claim", "paper", "ours [95% CI]", "chance", "n", "verdict"]].set_index("claim")
outputs.atomic_write_text(P.sub("tables") / "15_claims.md", outputs.markdown_table(headline))
verdicts

# %% [markdown]
# ## How much the training seeds move each number
# For every metric with more than one training seed, on the study's fact draw: the per-seed means, their range,
# and the interval over seeds and facts.

# %%
per_seed = record[(record.seed != "all") & (record.n_seeds == 1) & (record.fact_draw == results.STUDY_DRAW)]
multi = per_seed.groupby(["arm", "metric"]).filter(lambda d: d.seed.nunique() > 1)
summary = results.summary(record, results.STUDY_DRAW)
spread = (multi.pivot_table(index=["arm", "metric"], columns="seed", values="value")
          .assign(seed_range=lambda d: d.max(axis=1) - d.min(axis=1)))
if not spread.empty:
    spread = spread.join(summary[["value", "ci_low", "ci_high"]].rename(columns=lambda c: f"all seeds: {c}"))
    spread = spread[~spread.index.get_level_values("metric").str.contains("answer_prob")]
outputs.write_table(P, "15_seed_spread", spread.reset_index())
spread.round(3)

# %% [markdown]
# ## How much the facts drawn move each number
# Table 1's arms are trained on every fact draw (02, 03): per arm and metric, the spread of the draws' means next
# to the spread of the seeds within a draw (claims.draw_spread, the table 03 shows).

# %%
draw_spread = claims.draw_spread(record)
outputs.write_table(P, "15_draw_spread", draw_spread)
draw_spread.round(3)

# %% [markdown]
# ## report.md

# %%
FIGURES = [("01_group_a", "Group A: what the original model knows"), ("03_training_curves", "Training curves of all arms and seeds"),
           ("04_probe_accuracy_by_layer", "Fresh probes at every layer"), ("04_logit_lens", "Logit lens"),
           ("05_fig1_tsne_cities_fruits", "Figure 1: t-SNE and PCA of cities and fruits"),
           ("05_fig2_type_centroids_pca", "Figure 2: entities and type centroids"), ("05_geometry_by_layer", "Collapse measures per layer"),
           ("06_fig3_attention_heatmap", "Figure 3: attention heatmap"), ("06_fig4_evidence_weight", "Figure 4: evidence weight"),
           ("07_gsm8k", "GSM8K accuracy, scaffolding and length"), ("10_pareto", "Unlearning benchmark: forgetting vs collateral damage"),
           ("11_kl_sweep", "Open questions 1: what λ_KL drives"), ("12_gradients", "Open questions 2: gradient cosines along RLCP"),
           ("13_fact_counts", "Open questions 3: more target facts"), ("14_arithmetic", "Open questions 4: forgetting multiplication facts")]
counts = verdicts.verdict.value_counts().to_dict()
runs = manifest.get("notebooks", {})
commits = sorted({v.get("git_commit") or "unknown" for v in runs.values()})
precision = sorted({(v.get("precision") or {}).get("precision", "?") for v in runs.values()})
table1_md = P.output_dir / "tables" / "table1.md"
bench_md = P.output_dir / "tables" / "10_benchmark.md"
lines = [
    f"# RLCP study report: profile `{P.name}`", "",
    f"{P['description']}. Model `{P['model']}`, probe layer l* = {P['probe_layer']}, training seeds {P['seeds']}, "
    f"data seed {P['seed']}, precision {', '.join(precision)}, parameter hash `{P.hash}`, commit(s) {', '.join(f'`{c}`' for c in commits)}. "
    f"Generated by `notebooks/15_report` from the results record (`results/*.csv`); every number below comes from this "
    f"profile's run.", "",
    "Verdicts: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ".", "",
    "## Claims", "",
    outputs.markdown_table(verdicts.drop(columns=["section"]).set_index("claim")), "",
    "Spreads: for trained arms with several training seeds, a 95% two-level bootstrap interval (seeds, then facts within "
    "each seed) followed by the range of the seed means; otherwise a 95% bootstrap interval over facts, entities or "
    "problems (see each notebook). n counts units, prompts per seed and training seeds. Chance as stated per row "
    "(deranged answers for recall, 1/K for probes, the most common answer for GSM8K). The analyses of 04–07, and 09's relearning and 10's fluency, loss and probe measures, use the first "
    "training seed. The tables behind every row are in `tables/` and `results/`, the executed notebooks in `notebooks/`.", "",
    "## Table 1", "", table1_md.read_text() if table1_md.exists() else "(not run)", "",
    "## Unlearning benchmark (08)", "", bench_md.read_text() if bench_md.exists() else "(not run)", "",
    "## Figures", "",
]
for name, title in FIGURES:
    if (P.output_dir / "figures" / f"{name}.png").exists():
        lines += [f"### {title}", "", f"![{title}](figures/{name}.png)", ""]
lines += ["## Run", "", "| notebook | minutes | commit |", "|---|---|---|"] + [
    f"| {k} | {v.get('wall_s', 0) / 60:.1f} | `{(v.get('git_commit') or '')[:12]}` |" for k, v in runs.items()]
outputs.atomic_write_text(P.output_dir / "report.md", "\n".join(lines) + "\n")
display(Markdown("\n".join(lines[:8])))
