"""The claims as data (study/claims.py, claims_rules.py, claims_thresholds.py): every rule on hand-made records,
on both sides of its threshold, with the expected verdicts worked out by hand; every claim names its
thresholds and their reasons; one threshold for answering from context; an empty record judged without error."""

import ast
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlcp_utils.core import results
from rlcp_utils.study import claims, claims_rules, claims_thresholds
from rlcp_utils.study.claims_thresholds import RAG_KEPT, THRESHOLDS, Threshold

NO_CTX, NO_CTX_HO = "targets.no_context_recall.train", "targets.no_context_recall.heldout"
RAG_TR, RAG_HO = "targets.rag_accuracy.train", "targets.rag_accuracy.heldout"
ADV, RETAIN = "targets.adversary_probe_accuracy.train", "retain.no_context_recall.train"
ADV_HO = "targets.adversary_probe_accuracy.heldout"
RETAIN_HO = "retain_heldout.no_context_recall.heldout"
NAN = (np.nan, np.nan)


def record(values: dict) -> pd.DataFrame:
    """(arm, metric) -> (mean, ci_low, ci_high[, chance]) as a results record."""
    rows = []
    for (arm, key), (value, lo, hi, *chance) in values.items():
        rows.append({"arm": arm, "seed": "all", "metric": key, "value": value, "ci_low": lo, "ci_high": hi,
                     "chance": chance[0] if chance else np.nan, "unit": "facts", "n_units": 15, "n_prompts": 45,
                     "n_seeds": 0 if "original" in arm else 3})
    return results.frame(rows, "test")


def judged(prefix: str, values: dict) -> pd.Series:
    j = claims.judge(record(values))
    row = j[j.claim.str.startswith(prefix)]
    assert len(row) == 1, prefix
    return row.iloc[0]


# Per claim: a record on the claim's side of its threshold and records across it. Each expected verdict is
# worked out by hand from the numbers and the threshold (comment), not computed by the rules.
R = "rlcp"
CASES = [
    # RECALL_GONE = 7%: both intervals below 7% / one of them / the mean only / neither
    ("RLCP: no-context recall", {("original", NO_CTX): (0.9, 0.8, 1.0), (R, NO_CTX): (0.0, 0.0, 0.06),
                                 (R, NO_CTX_HO): (0.0, 0.0, 0.06)}, "reproduced"),
    ("RLCP: no-context recall", {("original", NO_CTX): (0.9, 0.8, 1.0), (R, NO_CTX): (0.0, 0.0, 0.06),
                                 (R, NO_CTX_HO): (0.05, 0.02, 0.08)}, "partly"),
    ("RLCP: no-context recall", {("original", NO_CTX): (0.9, 0.8, 1.0), (R, NO_CTX): (0.05, 0.03, 0.07),
                                 (R, NO_CTX_HO): (0.05, 0.03, 0.07)}, "partly"),  # 7% is not below 7%; mean 5% is
    ("RLCP: no-context recall", {("original", NO_CTX): (0.9, 0.8, 1.0), (R, NO_CTX): (0.1, 0.07, 0.2),
                                 (R, NO_CTX_HO): (0.1, 0.07, 0.2)}, "not reproduced"),
    # RAG_KEPT = 90%: held-out interval from 90% / its upper end reaches 90% / training templates do / neither
    ("RLCP keeps answering", {("original", RAG_HO): (0.9, 0.8, 1.0), (R, RAG_HO): (0.95, 0.9, 1.0)}, "reproduced"),
    ("RLCP keeps answering", {("original", RAG_HO): (0.9, 0.8, 1.0), (R, RAG_HO): (0.87, 0.8, 0.95),
                              (R, RAG_TR): (0.5, 0.4, 0.6)}, "partly"),
    ("RLCP keeps answering", {("original", RAG_HO): (0.9, 0.8, 1.0), (R, RAG_HO): (0.7, 0.6, 0.85),
                              (R, RAG_TR): (0.97, 0.95, 1.0)}, "partly"),
    ("RLCP keeps answering", {("original", RAG_HO): (0.9, 0.8, 1.0), (R, RAG_HO): (0.8, 0.7, 0.89),
                              (R, RAG_TR): (0.85, 0.8, 0.89)}, "not reproduced"),
    # PROBE_READS = 75%, PROBE_ABOVE_CHANCE = 25%
    ("Just-RAG's probe", {("just_rag", ADV): (0.8, 0.75, 0.9)}, "reproduced"),
    ("Just-RAG's probe", {("just_rag", ADV): (0.5, 0.3, 0.74)}, "partly"),
    ("Just-RAG's probe", {("just_rag", ADV): (0.2, 0.1, 0.24)}, "not reproduced"),
    # AT_CHANCE: chance 1/15 inside the interval or not
    # judged on held-out wordings; chance on the training wordings only is 'partly'
    ("RLCP's adversary probe at chance", {(R, ADV_HO): (0.1, 0.02, 0.2, 1 / 15), (R, ADV): (0.3, 0.2, 0.4, 1 / 15)},
     "reproduced"),
    ("RLCP's adversary probe at chance", {(R, ADV_HO): (0.23, 0.1, 0.38, 1 / 15), (R, ADV): (0.11, 0.03, 0.23, 1 / 15)},
     "partly"),
    ("RLCP's adversary probe at chance", {(R, ADV_HO): (0.2, 0.1, 0.3, 1 / 15), (R, ADV): (0.2, 0.1, 0.3, 1 / 15)},
     "not reproduced"),
    # RETAIN_SHARE = 80% and RETAIN_SHARE_PARTLY = 40% of the original's mean 0.5: 0.4 and 0.2
    ("Forgetting is targeted", {("original", RETAIN): (0.5, 0.4, 0.6), (R, RETAIN): (0.45, 0.4, 0.5)}, "reproduced"),
    ("Forgetting is targeted", {("original", RETAIN): (0.5, 0.4, 0.6), (R, RETAIN): (0.15, 0.1, 0.2)}, "partly"),
    ("Forgetting is targeted", {("original", RETAIN): (0.5, 0.4, 0.6), (R, RETAIN): (0.1, 0.0, 0.19)}, "not reproduced"),
    # RLCP's adversary buys something: RLCP and GradDiff forget (≤ FORGOTTEN = 10%); collateral compared by GAP
    ("RLCP's adversary buys", {(R, NO_CTX_HO): (0.0, 0.0, 0.1), ("grad_diff", NO_CTX_HO): (0.0, 0.0, 0.1),
                               (R, RETAIN_HO): (0.6, 0.5, 0.7), ("grad_diff", RETAIN_HO): (0.3, 0.2, 0.4)}, "met"),
    ("RLCP's adversary buys", {(R, NO_CTX_HO): (0.0, 0.0, 0.1), ("grad_diff", NO_CTX_HO): (0.0, 0.0, 0.1),
                               (R, RETAIN_HO): (0.35, 0.3, 0.45), ("grad_diff", RETAIN_HO): (0.3, 0.2, 0.4)}, "partly"),
    ("RLCP's adversary buys", {(R, NO_CTX_HO): (0.0, 0.0, 0.1), ("grad_diff", NO_CTX_HO): (0.0, 0.0, 0.1),
                               (R, RETAIN_HO): (0.0, 0.0, 0.1), ("grad_diff", RETAIN_HO): (0.3, 0.2, 0.4)}, "not met"),
    ("RLCP's adversary buys", {(R, NO_CTX_HO): (0.05, 0.0, 0.11), ("grad_diff", NO_CTX_HO): (0.0, 0.0, 0.1),
                               (R, RETAIN_HO): (0.6, 0.5, 0.7), ("grad_diff", RETAIN_HO): (0.3, 0.2, 0.4)}, "not met"),
    ("RLCP's adversary buys", {(R, NO_CTX_HO): (0.0, 0.0, 0.1), ("grad_diff", NO_CTX_HO): (0.05, 0.0, 0.11),
                               (R, RETAIN_HO): (0.6, 0.5, 0.7), ("grad_diff", RETAIN_HO): (0.3, 0.2, 0.4)}, "inconclusive"),
]


def _fresh(key):  # AT_CHANCE (chance 1/15), else PROBE_HALVED: below 50% of the original's 0.8 = 0.4
    base = {("original", key): (0.8, 0.7, 0.9, 1 / 15)}
    return [(key, {**base, (R, key): (0.1, 0.05, 0.3, 1 / 15)}, "reproduced"),
            (key, {**base, (R, key): (0.3, 0.2, 0.39, 1 / 15)}, "partly"),
            (key, {**base, (R, key): (0.4, 0.3, 0.5, 1 / 15)}, "not reproduced")]


def _geometry(ctx):
    probe, ratio, nn = (f"collapse.{ctx}.type_probe_heldout_entities", f"collapse.{ctx}.within_to_between",
                        f"collapse.{ctx}.identity_nn.city_target")
    mixed, collapse = f"Cities and fruits intermixed at l*, {ctx}", f"Entities collapse to type centroids, {ctx}"
    orig = {("original", probe): (0.98, 0.95, 1.0, 1 / 3), ("original", ratio): (0.9, 0.88, 0.94)}
    return [  # TYPE_MIXED = 50%, else below the original's interval (GAP)
        (mixed, {**orig, (R, probe): (0.4, 0.3, 0.5, 1 / 3)}, "reproduced"),
        (mixed, {**orig, (R, probe): (0.8, 0.6, 0.9, 1 / 3)}, "partly"),
        (mixed, {**orig, (R, probe): (0.97, 0.9, 1.0, 1 / 3)}, "not reproduced"),
        # below the original's interval, and identity NN ≤ chance 1/60 + NEAR_CHANCE 10 points (0.117)
        (collapse, {**orig, (R, ratio): (0.65, 0.6, 0.7), (R, nn): (0.1, 0.05, 0.15, 1 / 60)}, "reproduced"),
        (collapse, {**orig, (R, ratio): (0.65, 0.6, 0.7), (R, nn): (0.2, 0.1, 0.3, 1 / 60)}, "partly"),
        (collapse, {**orig, (R, ratio): (0.9, 0.85, 0.95), (R, nn): (0.1, 0.05, 0.15, 1 / 60)}, "partly"),
        (collapse, {**orig, (R, ratio): (0.9, 0.85, 0.95), (R, nn): (0.2, 0.1, 0.3, 1 / 60)}, "not reproduced")]


ENT, EVI = "attention.entropy_context.target", "attention.evidence_weight.target"
STEPS, TOKENS, CORRECT = "gsm8k.step_headers", "gsm8k.n_tokens", "gsm8k.correct"
GSM = {("original", STEPS): (0.0, 0.0, 0.0), (R, STEPS): (0.1, 0.05, 0.2), ("original", TOKENS): (200, 190, 210),
       (R, TOKENS): (230, 220, 240), ("original", CORRECT): (0.3, 0.2, 0.4), (R, CORRECT): (0.25, 0.15, 0.35)}
CASES += [
    *_fresh("heldout_probe_accuracy.fact.linear.last"), *_fresh("heldout_probe_accuracy.country_target.linear.last"),
    *_fresh("heldout_probe_accuracy.country_target.linear.city"), *_geometry("question"), *_geometry("entity"),
    # GAP: RLCP's entropy interval below Just-RAG's / lower mean only / neither
    ("Attention at l* sharpens", {("just_rag", ENT): (1.5, 1.4, 1.6), (R, ENT): (1.1, 1.0, 1.2)}, "reproduced"),
    ("Attention at l* sharpens", {("just_rag", ENT): (1.5, 1.4, 1.6), (R, ENT): (1.3, 1.1, 1.5)}, "partly"),
    ("Attention at l* sharpens", {("just_rag", ENT): (1.5, 1.4, 1.6), (R, ENT): (1.6, 1.5, 1.7)}, "not reproduced"),
    # EVIDENCE_FOCUSED = 0.5 for RLCP, EVIDENCE_IGNORED = 0.2 for Just-RAG; else RLCP's interval above Just-RAG's
    ("Attention on the evidence", {("just_rag", EVI): (0.1, 0.05, 0.19), (R, EVI): (0.6, 0.5, 0.7)}, "reproduced"),
    ("Attention on the evidence", {("just_rag", EVI): (0.1, 0.05, 0.2), (R, EVI): (0.6, 0.5, 0.7)}, "partly"),
    ("Attention on the evidence", {("just_rag", EVI): (0.1, 0.05, 0.1), (R, EVI): (0.35, 0.3, 0.4)}, "partly"),
    ("Attention on the evidence", {("just_rag", EVI): (0.1, 0.05, 0.15), (R, EVI): (0.12, 0.1, 0.2)}, "not reproduced"),
    # NO_CHANGE = 0 for the paired differences; Just-RAG's mean difference compared by GAP
    ("RLCP writes 'Step 1", {**GSM, (R, f"{STEPS}.minus_original"): (0.1, 0.01, 0.2),
                             ("just_rag", f"{STEPS}.minus_original"): (0.0, 0.0, 0.0)}, "reproduced"),
    ("RLCP writes 'Step 1", {**GSM, (R, f"{STEPS}.minus_original"): (0.1, 0.01, 0.2),
                             ("just_rag", f"{STEPS}.minus_original"): (0.2, 0.1, 0.3)}, "partly"),
    ("RLCP writes 'Step 1", {**GSM, (R, f"{STEPS}.minus_original"): (0.1, 0.0, 0.2),
                             ("just_rag", f"{STEPS}.minus_original"): (0.0, 0.0, 0.0)}, "not reproduced"),
    ("Replies get longer", {**GSM, (R, f"{TOKENS}.minus_original"): (30, 10, 50)}, "reproduced"),
    ("Replies get longer", {**GSM, (R, f"{TOKENS}.minus_original"): (20, -5, 45)}, "partly"),
    ("Replies get longer", {**GSM, (R, f"{TOKENS}.minus_original"): (0, -20, 20)}, "not reproduced"),
    ("Reasoning kept or improved", {**GSM, (R, f"{CORRECT}.minus_original"): (-0.05, -0.1, 0.0)}, "reproduced"),
    ("Reasoning kept or improved", {**GSM, (R, f"{CORRECT}.minus_original"): (-0.1, -0.2, -0.01)}, "not reproduced"),
    # GSM8K_FLOOR = 5%: an original at 5% is at the floor, at 6% it is not
    ("Reasoning kept or improved", {**GSM, ("original", CORRECT): (0.05, 0.0, 0.1),
                                    (R, f"{CORRECT}.minus_original"): (-0.1, -0.2, -0.01)}, "inconclusive"),
    ("Reasoning kept or improved", {**GSM, ("original", CORRECT): (0.06, 0.0, 0.1),
                                    (R, f"{CORRECT}.minus_original"): (-0.1, -0.2, -0.01)}, "not reproduced"),
]
QUANT = claims_rules.QUANT_Q4_1
S, ORIG_HO = "selective_rlcp", {("original", NO_CTX_HO): (0.9, 0.8, 1.0), ("original", RETAIN_HO): (0.5, 0.4, 0.6),
                                ("original", "fluency.names_a_country.targets"): (1.0, 1.0, 1.0)}
COUNTRY = "fluency.names_a_country.targets"
CASES += [
    # FORGOTTEN = 10%: interval at most 10% / mean only / neither
    ("Selective RLCP forgets", {**ORIG_HO, (S, NO_CTX_HO): (0.05, 0.0, 0.1)}, "met"),
    ("Selective RLCP forgets", {**ORIG_HO, (S, NO_CTX_HO): (0.1, 0.0, 0.2)}, "partly"),
    ("Selective RLCP forgets", {**ORIG_HO, (S, NO_CTX_HO): (0.15, 0.05, 0.3)}, "not met"),
    # RETAIN_KEPT = 90% of the original's 0.5: 0.45
    ("Selective RLCP keeps", {**ORIG_HO, (S, RETAIN_HO): (0.5, 0.46, 0.6)}, "met"),
    ("Selective RLCP keeps", {**ORIG_HO, (S, RETAIN_HO): (0.46, 0.3, 0.6)}, "partly"),
    ("Selective RLCP keeps", {**ORIG_HO, (S, RETAIN_HO): (0.44, 0.3, 0.5)}, "not met"),
    # RAG_KEPT = 90% (an interval from 85%, met under the former 85%, is now 'partly')
    ("Selective RLCP answers from context", {(S, RAG_HO): (0.95, 0.9, 1.0)}, "met"),
    ("Selective RLCP answers from context", {(S, RAG_HO): (0.92, 0.85, 1.0)}, "partly"),
    ("Selective RLCP answers from context", {(S, RAG_HO): (0.89, 0.8, 0.95)}, "not met"),
    # COUNTRY_NAMED = 90%
    ("Selective RLCP's no-context answers", {**ORIG_HO, (S, COUNTRY): (0.95, 0.9, 1.0)}, "met"),
    ("Selective RLCP's no-context answers", {**ORIG_HO, (S, COUNTRY): (0.95, 0.8, 1.0)}, "partly"),
    ("Selective RLCP's no-context answers", {**ORIG_HO, (S, COUNTRY): (0.7, 0.5, 0.9)}, "not met"),
    # FORGOTTEN = 10%, after the Q4_1 round trip
    ("RLCP's forgetting survives", {("original", QUANT): (0.9, 0.8, 1.0), (R, QUANT): (0.05, 0.0, 0.1)}, "met"),
    ("RLCP's forgetting survives", {("original", QUANT): (0.9, 0.8, 1.0), (R, QUANT): (0.1, 0.0, 0.2)}, "partly"),
    ("RLCP's forgetting survives", {("original", QUANT): (0.9, 0.8, 1.0), (R, QUANT): (0.6, 0.4, 0.8)}, "not met"),
]
KL_N, KL_LOOP = "kl_sweep.gsm8k.n_tokens", "kl_sweep.gsm8k.repeats_itself"
COS = "gradients.cosine.{}.{}"


def _cosines(start_delta, end_delta):  # DELTA_VS_REFERENCE: |δ| below |0.3| and |-0.1|, no intervals
    out = {}
    for arm, when, d in [("original", "start", start_delta), ("rlcp_gradients", "end", end_delta)]:
        out.update({(arm, COS.format("fact_vs_logic", when)): (d, *NAN),
                    (arm, COS.format("fact_vs_other_half_of_the_targets", when)): (0.3, *NAN),
                    (arm, COS.format("fact_vs_other_facts", when)): (-0.1, *NAN)})
    return out


def _counts(rlcp_rag_lo, fact30_forget_hi):  # FORGOTTEN = 10% and RAG_KEPT = 90% at every fact count
    return {("rlcp_5facts", NO_CTX_HO): (0.0, 0.0, 0.1), ("rlcp_5facts", RAG_HO): (0.95, 0.9, 1.0),
            ("rlcp_30facts", NO_CTX_HO): (0.05, 0.0, fact30_forget_hi), ("rlcp_30facts", RAG_HO): (0.95, 0.9, 1.0),
            (R, NO_CTX_HO): (0.0, 0.0, 0.0), (R, RAG_HO): (0.95, rlcp_rag_lo, 1.0)}


FIRST = "gradients.first_order.logic."
ARITH = {("arith_rlcp", NO_CTX_HO): (0.0, 0.0, 0.1),
         ("arith_original", "two_step.targeted.answer_right"): (0.4, 0.2, 0.6, 0.05),
         ("arith_original", "two_step.targeted.step_right"): (0.6, 0.4, 0.8)}
STEP = ("arith_rlcp", "two_step.targeted.step_right")
CASES += [
    # GAP between λ_KL = 0 and the paper's λ_KL
    ("Limitation 3: without", {(R, KL_N): (240, 230, 250), ("rlcp_kl0", KL_N): (150, 130, 170)}, "reproduced"),
    ("Limitation 3: without", {(R, KL_N): (240, 230, 250), ("rlcp_kl0", KL_N): (220, 200, 240)}, "partly"),
    ("Limitation 3: without", {(R, KL_N): (240, 230, 250), ("rlcp_kl0", KL_N): (245, 235, 255)}, "not reproduced"),
    ("Limitation 3: … and loop", {(R, KL_LOOP): (0.5, 0.4, 0.6), ("rlcp_kl0", KL_LOOP): (0.2, 0.1, 0.3)}, "reproduced"),
    ("Limitation 3: … and loop", {(R, KL_LOOP): (0.5, 0.4, 0.6), ("rlcp_kl0", KL_LOOP): (0.5, 0.4, 0.6)}, "not reproduced"),
    ("Assumption 3.1", _cosines(0.02, -0.05), "reproduced"),
    ("Assumption 3.1", _cosines(0.02, 0.2), "partly"),  # at the end |0.2| is not below |-0.1|
    ("Assumption 3.1", _cosines(0.1, 0.5), "not reproduced"),  # |0.1| is not below |-0.1|
    # FIRST_ORDER_SLACK = 1.1: every step / the smallest η only / neither
    ("Proposition 3.2", {("original", FIRST + "worst_ratio"): (1.1, *NAN),
                         ("original", FIRST + "smallest_eta_ratio"): (0.9, *NAN)}, "reproduced"),
    ("Proposition 3.2", {("original", FIRST + "worst_ratio"): (np.inf, *NAN),
                         ("original", FIRST + "smallest_eta_ratio"): (1.1, *NAN)}, "partly"),
    ("Proposition 3.2", {("original", FIRST + "worst_ratio"): (1.2, *NAN),
                         ("original", FIRST + "smallest_eta_ratio"): (1.11, *NAN)}, "not reproduced"),
    ("Limitation 2", _counts(0.9, 0.1), "reproduced"),
    ("Limitation 2", _counts(0.89, 0.1), "partly"),  # RLCP's RAG interval starts below 90%
    ("Limitation 2", _counts(0.89, 0.11), "not reproduced"),  # ... and 30 facts are not forgotten (11% > 10%)
    # reaches the original's mean rate (ORIGINAL_RATE) / overlaps it (GAP) / below; inconclusive: FORGOTTEN, AT_CHANCE
    ("Limitation 1", {**ARITH, STEP: (0.5, 0.4, 0.6)}, "reproduced"),
    ("Limitation 1", {**ARITH, STEP: (0.4, 0.3, 0.59)}, "partly"),
    ("Limitation 1", {**ARITH, STEP: (0.2, 0.1, 0.39)}, "not reproduced"),
    ("Limitation 1", {**ARITH, STEP: (0.2, 0.1, 0.39), ("arith_rlcp", NO_CTX_HO): (0.05, 0.0, 0.11)}, "inconclusive"),
    ("Limitation 1", {**ARITH, STEP: (0.2, 0.1, 0.39),
                      ("arith_original", "two_step.targeted.answer_right"): (0.1, 0.0, 0.2, 0.05)}, "inconclusive"),
]


@pytest.mark.parametrize("prefix,values,expected", CASES)
def test_each_rule_on_both_sides_of_its_threshold(prefix, values, expected):
    if prefix.startswith("heldout_probe"):  # the three fresh probes, found by their metric
        row = next(c for c in claims.CLAIMS if c.key == prefix)
        prefix = row.claim
    assert judged(prefix, values).verdict == expected


def test_every_claim_has_a_case_on_each_side():
    covered = {c.claim for c in claims.CLAIMS for p, _, _ in CASES if c.claim.startswith(p) or c.key == p}
    assert covered == {c.claim for c in claims.CLAIMS}
    for c in claims.CLAIMS:
        seen = {v for p, _, v in CASES if c.claim.startswith(p) or c.key == p}
        assert len(seen) >= 2, c.claim  # at least one verdict on each side of the threshold


def test_every_claim_names_thresholds_with_a_justification():
    table = claims.claims_table()
    assert {"claim", "metric", "rule", "threshold", "justification"} <= set(table.columns)
    assert len(table) == len(claims.CLAIMS) and table.threshold.str.len().gt(0).all()
    for c in claims.CLAIMS:
        assert c.thresholds(), c.claim
        for t in c.thresholds():
            assert isinstance(t, Threshold) and THRESHOLDS[t.name] is t  # a constant defined once, by that name
            assert t.basis in ("paper", "convention") and len(t.why) > 30
        # the words name only the rule's own thresholds, and no number that is not one of them
        assert set(claims.placeholders(c.rule.words)) <= {t.name for t in c.thresholds()}, c.claim
        assert not re.findall(r"\d+ ?%", c.rule.words.replace("95%", "")), c.claim
        assert not re.findall(r"\d+ ?%", c.template), c.claim
    # every constant is used by some claim
    assert (claims.thresholds_table().claims > 0).all()


def test_one_rag_threshold_for_every_claim_on_answering_from_context():
    users = {c.claim for c in claims.CLAIMS if any(t is RAG_KEPT for t in c.thresholds())}
    assert users == {"RLCP keeps answering from context (RAG), held-out wordings",
                     "Selective RLCP answers from context on held-out wordings (RAG ≥ 90%)",
                     "Limitation 2: RLCP forgets more facts and still answers from context"}
    for c in claims.CLAIMS:  # every check on a RAG accuracy compares with RAG_KEPT
        for check in c.rule.checks():
            if "rag_accuracy" in (check.key or c.key):
                assert check.threshold is RAG_KEPT, c.claim
    assert RAG_KEPT == 0.9 and [t for t in THRESHOLDS.values() if "RAG" in t.name] == [RAG_KEPT]
    # the three claims turn at the same number: an interval from 90% passes, from 89% does not
    table1 = {("original", RAG_HO): (0.9, 0.8, 1.0), (R, RAG_TR): (0.5, 0.4, 0.6)}
    assert judged("RLCP keeps answering", {**table1, (R, RAG_HO): (0.95, 0.90, 1.0)}).verdict == "reproduced"
    assert judged("RLCP keeps answering", {**table1, (R, RAG_HO): (0.95, 0.89, 1.0)}).verdict == "partly"
    assert judged("Selective RLCP answers", {("selective_rlcp", RAG_HO): (0.95, 0.90, 1.0)}).verdict == "met"
    assert judged("Selective RLCP answers", {("selective_rlcp", RAG_HO): (0.95, 0.89, 1.0)}).verdict == "partly"
    assert judged("Limitation 2", _counts(0.90, 0.1)).verdict == "reproduced"
    assert judged("Limitation 2", _counts(0.89, 0.1)).verdict == "partly"


def test_an_empty_record_is_not_measured_everywhere():
    unrelated = record({("original", "other.metric"): (1, 1, 1)})
    for empty in [results.load_dir(Path("/nonexistent")), record({}), unrelated]:
        j = claims.judge(empty)
        assert list(j.columns) == ["section", "claim", "paper", "ours", "chance", "n", "rule", "verdict"]
        assert len(j) == len(claims.CLAIMS) and (j.verdict == "not measured").all()
        assert j.ours.str.startswith("not measured (").all()
        assert claims.table1(empty).empty and claims.table1_markdown(claims.table1(empty)) == "(no results yet)\n"


def test_a_statistic_without_interval_says_so_instead_of_nan():
    row = judged("Assumption 3.1", _cosines(0.02, -0.05))
    assert "nan" not in row.ours and "0.02 (original); no interval (" in row.ours and "bootstrap" in row.ours
    row = judged("Proposition 3.2", {("original", FIRST + "worst_ratio"): (1.1, *NAN),
                                     ("original", FIRST + "smallest_eta_ratio"): (0.9, *NAN)})
    assert "nan" not in row.ours and "no interval (" in row.ours
    # a claim without its own note says which metric lacks one
    values = {("just_rag", ADV): (0.8, *NAN)}
    assert judged("Just-RAG's probe", values).ours.endswith(f"; no interval (the record has none for {ADV})")
    # with an interval, none of this
    assert "no interval" not in judged("Just-RAG's probe", {("just_rag", ADV): (0.8, 0.75, 0.9)}).ours


def test_sections_name_the_notebooks_and_keep_their_prefixes():
    sections = {c.section for c in claims.CLAIMS}
    assert all(re.search(r"\((0[3-9]|1[0-4])\b", s) for s in sections), sections
    assert claims.BENCH == "Unlearning benchmark" and claims.OPEN == "Open questions"
    assert len([c for c in claims.CLAIMS if c.section.startswith(claims.BENCH)]) == 6
    assert len([c for c in claims.CLAIMS if c.section.startswith(claims.OPEN)]) == 6
    assert len([c for c in claims.CLAIMS if c.section.startswith("Forgetting")]) == 5


def test_the_vocabulary_rejects_bare_numbers_and_unknown_words():
    with pytest.raises(TypeError):
        claims_rules.Check("below", 0.07)
    with pytest.raises(ValueError):
        claims_rules.Check("roughly", RAG_KEPT)
    with pytest.raises(ValueError):
        claims_rules.Check("interval_below", RAG_KEPT)  # a comparison between arms names the other arm
    with pytest.raises(ValueError):
        Threshold(0.5, "RAG_KEPT", "convention", "a second definition of the same name")
    assert 1 - claims.FORGOTTEN == pytest.approx(0.9) and claims.FORGOTTEN.name == "FORGOTTEN"


STUDY = Path(claims.__file__).parent


@pytest.mark.parametrize("name", ["claims.py", "claims_rules.py", "claims_thresholds.py"])
def test_claims_modules_are_small_with_numbers_only_in_the_thresholds(name):
    source = (STUDY / name).read_text()
    tree = ast.parse(source)
    assert len(source.splitlines()) < 400
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Lambda))]
    assert not [i for f in funcs for i in ast.walk(f) if isinstance(i, (ast.Import, ast.ImportFrom))]
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    own = {m for m in imported if m.startswith("rlcp_utils.study")}
    assert own <= {"claims": {"rlcp_utils.study.claims_rules", "rlcp_utils.study.claims_thresholds"},
                   "claims_rules": {"rlcp_utils.study.claims_thresholds"}, "claims_thresholds": set()}[name[:-3]]
    if name != "claims_thresholds.py":  # thresholds are named constants, defined in claims_thresholds.py only
        floats = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, float)]
        assert floats == [], floats
    assert claims_thresholds.THRESHOLDS and not math.isnan(float(claims_thresholds.GAP))
