"""Figures shared by several notebooks."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

# One colour per arm in every figure of the study.
ARM_COLORS = {"original": "0.4", "just_rag": "tab:blue", "unlikelihood": "tab:green", "rlcp": "tab:red",
              "selective_rlcp": "tab:purple", "grad_diff": "tab:orange", "npo": "tab:brown", "rmu": "tab:pink"}

CURVES = [("ce_no_context", "CE of the answer, no context (higher = forgotten)"),
          ("l_rag", "L_RAG: CE of the answer given the evidence"),
          ("l_kl", "KL(reference || model) on x_no"),
          ("l_probe", "adversary CE (chance = ln K)"),
          ("adversary_acc", "adversary accuracy on the batch"),
          ("alpha", "GRL strength alpha")]


def training_curves(logs: dict[tuple[str, int], pd.DataFrame], n_classes: int, smooth: int = 5):
    """One panel per logged quantity, one line per (arm, training seed) in the arm's colour (rolling mean
    over `smooth` steps)."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (col, title) in zip(axes.flat, CURVES):
        labelled = set()
        for (arm, seed), frame in logs.items():
            ax.plot(frame["step"], frame[col].rolling(smooth, min_periods=1).mean(), color=ARM_COLORS.get(arm), lw=1,
                    alpha=0.8, label=None if arm in labelled else f"{arm} ({sum(a == arm for a, _ in logs)} seeds)")
            labelled.add(arm)
        ax.set(title=title, xlabel="step")
        if col == "l_probe":
            ax.axhline(math.log(n_classes), color="k", ls=":", lw=1)
        if col == "adversary_acc":
            ax.axhline(1 / n_classes, color="k", ls=":", lw=1, label="chance")
    axes.flat[0].legend()
    fig.tight_layout()
    return fig


def draw_spread(record: pd.DataFrame, metrics: list[str], arms: list[str]):
    """One panel per metric: for each arm, every job's value (a dot per (fact draw, seed), one colour per draw,
    spread sideways by draw), each draw's mean over its seeds (a short bar in the draw's colour) and the summary
    over draws with its interval (black). What it shows: whether the facts drawn move a number more than the
    training seed does."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.6), squeeze=False)
    draws = sorted({int(d) for d in record.fact_draw if d != "all"})
    colors = plt.get_cmap("tab10")
    for ax, key in zip(axes.flat, metrics):
        for x, arm in enumerate(arms):
            rows = record[(record.arm == arm) & (record.metric == key)]
            for d in draws:
                offset = x + 0.25 * (d - (len(draws) - 1) / 2) / max(1, len(draws) - 1)
                jobs_d = rows[(rows.fact_draw == str(d)) & (rows.seed != "all")].value.astype(float)
                ax.scatter([offset] * len(jobs_d), jobs_d, s=14, color=colors(d), alpha=0.8,
                           label=f"fact draw {d}" if x == 0 else None)
                mean_d = rows[(rows.fact_draw == str(d)) & (rows.seed == "all")].value.astype(float)
                if len(mean_d):
                    ax.hlines(mean_d.iloc[0], offset - 0.06, offset + 0.06, color=colors(d), lw=2)
            over = rows[(rows.fact_draw == "all") & (rows.seed == "all")]
            if len(over):
                r = over.iloc[0]
                ax.errorbar([x + 0.32], [r.value], yerr=[[r.value - r.ci_low], [r.ci_high - r.value]], fmt="o", color="k",
                            ms=4, capsize=3, label="over draws [95%]" if x == 0 else None)
        ax.set_xticks(range(len(arms)), arms, fontsize=8)
        ax.set(ylim=(-0.03, 1.03), title=key.replace("targets.", "targets: ").replace("retain.", "retain: "))
        ax.title.set_fontsize(8)
    axes.flat[0].set_ylabel("accuracy")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
