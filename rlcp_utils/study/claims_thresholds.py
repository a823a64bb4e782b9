"""Every number the claims (claims.py) are judged against, defined once, with where it comes from.

A threshold is a float (so `1 - FORGOTTEN` works where a notebook draws it) that also carries its name, its
basis ('paper': the number or words are the paper's; 'convention': a choice of this study, stated here) and
the reason for its value. The rules (claims_rules.py) and the claims table name these constants; no rule
holds a literal number. THRESHOLDS lists them all by name (the report's table of thresholds).
"""

from __future__ import annotations

THRESHOLDS: dict[str, Threshold] = {}

SHOWN = {"share": lambda x: f"{x:.0%}", "points": lambda x: f"{100 * x:.0f} points", "number": lambda x: f"{x:g}"}


class Threshold(float):
    """A named number a rule compares with. `kind` says how it is shown in the claims' words: 'share' (7%),
    'points' (10 points, added to a chance level) or 'number' (0.5, 1.1)."""

    def __new__(cls, value: float, name: str, basis: str, why: str, kind: str = "share"):
        if basis not in ("paper", "convention") or kind not in SHOWN or not why.strip():
            raise ValueError(f"threshold {name}: basis 'paper' or 'convention', a known kind and a reason are required")
        if name in THRESHOLDS:
            raise ValueError(f"threshold {name} is defined twice")
        self = super().__new__(cls, value)
        self.name, self.basis, self.why, self.kind = name, basis, why, kind
        THRESHOLDS[name] = self
        return self

    @property
    def shown(self) -> str:
        return SHOWN[self.kind](float(self))

    def __repr__(self) -> str:
        return f"{self.name} = {self.shown}"


# --- forgetting (Table 1, notebook 03) -------------------------------------------------------------------------
RECALL_GONE = Threshold(0.07, "RECALL_GONE", "paper", "the paper's abstract: RLCP reaches 'near-zero retention of "
                        "targeted factual associations (Accuracy < 7%)'")
RAG_KEPT = Threshold(0.90, "RAG_KEPT", "convention", "the paper has RLCP keep answering from context (the L_RAG "
                     "survival stream) but gives that no threshold; 'kept' here is at or above 90%, the mirror of "
                     "FORGOTTEN (at most 10%) and the target the Table 1 claim already stated. One value for every "
                     "claim on answering from context: Table 1 (03), the selective goal (08), limitation 2 (13)")
PROBE_READS = Threshold(0.75, "PROBE_READS", "convention", "the paper's Just-RAG observer probe reads 88.5% (Table "
                        "1); 'still reads the facts' = interval at or above 75%, a margin under the paper's number for "
                        "a smaller model, far above chance (1/15)")
PROBE_ABOVE_CHANCE = Threshold(0.25, "PROBE_ABOVE_CHANCE", "convention", "partly for 'still reads the facts': at or "
                               "above 25%, about four times chance (1/15): the probe reads something")
AT_CHANCE = Threshold(0.0, "AT_CHANCE", "paper", "the paper: RLCP's adversary probe ≈ 6.7% (1/15, chance) and the "
                      "facts 'linearly undecodable'; 'at chance' = the chance level inside the 95% interval, no margin",
                      kind="points")
RETAIN_SHARE = Threshold(0.80, "RETAIN_SHARE", "convention", "not claimed by the paper, implied by 'targeted "
                         "forgetting': the retain facts keep their recall when RLCP's interval is at or above 80% of "
                         "the original's mean")
RETAIN_SHARE_PARTLY = Threshold(0.40, "RETAIN_SHARE_PARTLY", "convention", "partly for 'retain facts keep their "
                                "recall': RLCP's upper end reaches 40% of the original's mean (much, not all, lost)")

# --- representations: probes, geometry, attention (04-06) -------------------------------------------------------
PROBE_HALVED = Threshold(0.5, "PROBE_HALVED", "convention", "partly for 'linearly undecodable': a fresh probe's "
                         "interval below half the original's accuracy (the paper's direction, not its size)")
TYPE_MIXED = Threshold(0.5, "TYPE_MIXED", "convention", "the paper shows cities and fruits intermixed at l* (t-SNE, "
                       "Fig. 1) without a number; intermixed = a type probe on held-out entities at or below 50% "
                       "(chance 1/3, separated types 100%)")
NEAR_CHANCE = Threshold(0.10, "NEAR_CHANCE", "convention", "the paper's Fig. 2 shows entities collapsing to their "
                        "type's centroid (a picture); collapsed identities = target-city nearest-neighbour identity "
                        "accuracy within 10 points of chance", kind="points")
EVIDENCE_FOCUSED = Threshold(0.5, "EVIDENCE_FOCUSED", "convention", "the paper's Fig. 4: RLCP's attention on the "
                             "evidence token at l* ≈ 0.7; convention: at or above 0.5", kind="number")
EVIDENCE_IGNORED = Threshold(0.2, "EVIDENCE_IGNORED", "convention", "the paper's Fig. 4: Just-RAG's attention on the "
                             "evidence token < 0.1; convention: below 0.2", kind="number")
GAP = Threshold(0.0, "GAP", "convention", "'lower (higher) than another arm' = a gap above 0 between the two: between "
                "their 95% intervals (no overlap) for the full verdict, between their means for 'partly'",
                kind="number")

# --- GSM8K (07) -------------------------------------------------------------------------------------------------
NO_CHANGE = Threshold(0.0, "NO_CHANGE", "convention", "a paired difference to the original (same problems) counts "
                      "as a rise when its interval lies above 0 and as kept when its interval reaches 0",
                      kind="number")
GSM8K_FLOOR = Threshold(0.05, "GSM8K_FLOOR", "convention", "an original that solves at most 5% of the problems "
                        "leaves no accuracy to keep: the claim is inconclusive at this floor")

# --- the unlearning benchmark (08-10): our goals, not the paper's claims --------------------------------------
FORGOTTEN = Threshold(0.10, "FORGOTTEN", "convention", "'forgets' in the unlearning benchmark and the open "
                      "questions: no-context recall on held-out wordings at most 10% (the paper's own Table 1 claim "
                      "keeps its < 7%, RECALL_GONE)")
RETAIN_KEPT = Threshold(0.90, "RETAIN_KEPT", "convention", "our selective goal: held-out retain recall at or above "
                        "90% of the original's, the mirror of FORGOTTEN")
COUNTRY_NAMED = Threshold(0.90, "COUNTRY_NAMED", "convention", "our selective goal: at least 90% of the no-context "
                          "answers about the targets still name a country (fluent answers, not degenerate text)")

# --- the paper's open questions (11-14) --------------------------------------------------------------------------
DELTA_VS_REFERENCE = Threshold(1.0, "DELTA_VS_REFERENCE", "convention", "Assumption 3.1 calls δ small without a "
                               "number; small = δ below (ratio 1 of) the |cosine| of two references measured the same "
                               "way: two halves of the fact loss, and the fact loss against other facts",
                               kind="number")
FIRST_ORDER_SLACK = Threshold(1.1, "FIRST_ORDER_SLACK", "convention", "Proposition 3.2 bounds the change to first "
                              "order (+ O(η²)); the measured change ÷ bound may exceed 1 by 10% for the higher-order "
                              "terms", kind="number")
ORIGINAL_RATE = Threshold(1.0, "ORIGINAL_RATE", "convention", "limitation 1: the reasoning survives when RLCP's "
                          "interval reaches the original's mean rate (100% of it); partly when their intervals overlap")
