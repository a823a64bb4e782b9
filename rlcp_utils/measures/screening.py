"""Which candidate facts the model knows: a rule that does not flip with the last bits of a score.

Each candidate is asked with every training question template, without context. A template is recalled when
greedy decoding produces the country (`evaluate.score_answers`: greedy_margin > 0). The old rule, "known when at
least `known_threshold` of the templates are recalled", flips whenever one template's decision flips, and a
decision whose margin (the log-probability gap between the answer token and the best other token) is near zero
flips with the last bits of the computation: another precision, padding, batch or machine. One such flip
(Isfahan, 6 of 7 templates recalled, then 5 of 7) changed 8 of the 15 targets that the seeded draw picked.

So only firm decisions count, those with |greedy_margin| >= screen_margin:
- known: the firm recalls alone reach the threshold, whatever the others do;
- unknown: the threshold is out of reach even if every infirm template were recalled;
- borderline: everything else. Borderline candidates enter no pool: not targets, not retain facts, not
  country-probe cities, so no numerical accident can move a fact from one pool to another.
With screen_margin = 0 the rule is the old one (every decision is firm).
"""

from __future__ import annotations

import math

import numpy as np

from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate

STATUSES = ("known", "borderline", "unknown")


def templates_needed(n_templates: int, known_threshold: float) -> int:
    """How many of n templates a known fact must be recalled on (recall >= threshold)."""
    return math.ceil(known_threshold * n_templates - 1e-9)


def status(margins: np.ndarray, known_threshold: float, screen_margin: float) -> str:
    """'known', 'borderline' or 'unknown' from one candidate's greedy margins (one per template)."""
    margins = np.asarray(margins, dtype=float)
    needed = templates_needed(len(margins), known_threshold)
    firm_recalled = int((margins >= max(screen_margin, np.finfo(float).tiny)).sum())
    infirm = int((np.abs(margins) < screen_margin).sum())
    if firm_recalled >= needed:
        return "known"
    if firm_recalled + infirm < needed:
        return "unknown"
    return "borderline"


def screen(model, tokenizer, pool: list[dict], questions: list[facts.Template], prompt_format: str, batch_size: int,
           known_threshold: float, screen_margin: float, padding: str = "right", desc: str | None = None) -> list[dict]:
    """Every candidate of the pool with its screening: recall and mean answer probability over the templates,
    the smallest |margin| of its decisions, the number of infirm decisions, and its status."""
    items = facts.build_items(tokenizer, pool, questions, prompt_format)
    scores = evaluate.score_answers(model, [i["prompt_ids"] for i in items], [i["answer_ids"] for i in items],
                                    batch_size, tokenizer.pad_token_id, desc=desc, padding=padding)
    fact_of = np.array([i["fact"] for i in items])
    out = []
    for idx, row in enumerate(pool):
        margins = scores["greedy_margin"][fact_of == idx]
        out.append({**row, "recall_train": float((margins > 0).mean()),
                    "answer_prob_train": float(scores["answer_prob"][fact_of == idx].mean()),
                    "min_abs_margin": float(np.abs(margins).min()), "infirm_templates": int((np.abs(margins) < screen_margin).sum()),
                    "status": status(margins, known_threshold, screen_margin)})
    return out
