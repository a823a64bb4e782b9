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
