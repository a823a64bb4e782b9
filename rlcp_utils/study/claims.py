"""The paper's claims and the one set of rules that judges them, on the results record (results.py).

Notebook 03 shows the Table 1 subset (section 'Forgetting ...'), 08 all of them; both call `judge`, so a
claim gets the same verdict wherever it is shown. Every rule reads the interval, not only the mean: for a
trained arm the interval is the two-level bootstrap over training seeds and facts, so a verdict holds across
seeds. 'reproduced' needs the whole interval on the paper's side of the rule's threshold; 'not reproduced'
the whole interval on the other side (or the rule's own fallback); 'partly' is in between, as each rule says.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from rlcp_utils.core import results


class Missing(KeyError):
    """A metric this profile did not produce (an arm not trained, a notebook not run)."""


class View:
    """The summary view of a results record (results.summary), with the accessors the rules use."""

    def __init__(self, record: pd.DataFrame):
        self.record = record
        self.table = results.summary(record)

    def row(self, arm: str, key: str) -> pd.Series:
        try:
            return self.table.loc[(arm, key)]
        except KeyError:
            raise Missing(f"{arm}.{key}") from None

    def value(self, arm: str, key: str) -> float:
        return float(self.row(arm, key).value)

    def ci(self, arm: str, key: str) -> tuple[float, float]:
        r = self.row(arm, key)
        return float(r.ci_low), float(r.ci_high)

    def chance(self, arm: str, key: str) -> float:
        c = self.row(arm, key).chance
        return float("nan") if c is None or pd.isna(c) else float(c)

    def shown(self, arm: str, key: str, pct: bool = True) -> str:
        v, (lo, hi) = self.value(arm, key), self.ci(arm, key)
        text = f"{v:.1%} [{lo:.0%}, {hi:.0%}]" if pct else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"
        rng = results.seed_range(self.record, arm, key)
        if rng is not None:
            text += f"; seeds {rng[0]:.0%}–{rng[1]:.0%}" if pct else f"; seeds {rng[0]:.2f}–{rng[1]:.2f}"
        return text

    def n(self, arm: str, key: str) -> str:
        r = self.row(arm, key)
        parts = []
        if not pd.isna(r.n_units):
            parts.append(f"{int(r.n_units)} {r.unit if isinstance(r.unit, str) else 'units'}")
        if not pd.isna(r.n_prompts):
            parts.append(f"{int(r.n_prompts)} prompts")
        n_seeds = 0 if pd.isna(r.n_seeds) else int(r.n_seeds)
        parts.append(f"{n_seeds} seed{'s' if n_seeds != 1 else ''}" if n_seeds else "untrained")
        return ", ".join(parts)

    # --- the building blocks of the rules -----------------------------------------------------------------
    def below(self, arm: str, key: str, threshold: float) -> bool:
        """The whole interval below the threshold."""
        return self.ci(arm, key)[1] < threshold

    def at_least(self, arm: str, key: str, threshold: float) -> bool:
        """The whole interval at or above the threshold."""
        return self.ci(arm, key)[0] >= threshold

    def at_chance(self, arm: str, key: str) -> bool:
        lo, hi = self.ci(arm, key)
        return lo <= self.chance(arm, key) <= hi

    def interval_below(self, arm_a: str, arm_b: str, key: str) -> bool:
        """arm_a's interval lies entirely below arm_b's."""
        return self.ci(arm_a, key)[1] < self.ci(arm_b, key)[0]


def verdict(full: bool, part: bool = False) -> str:
    return "reproduced" if full else ("partly" if part else "not reproduced")


@dataclass(frozen=True)
class Claim:
    section: str
    claim: str
    paper: str
    arm: str | Callable[["View"], str]  # a name, or a function of the record (a sweep's setting named by its parameters)
    key: str
    rule: str  # the rule, in words (shown in the report)
    judge: Callable[[View], str]
    pct: bool = True
    compare_to: str | None = None  # the arm the claim contrasts with, shown before ours ("original → rlcp")


NO_CTX, NO_CTX_HO = "targets.no_context_recall.train", "targets.no_context_recall.heldout"
ADV = "targets.adversary_probe_accuracy.train"


def _recall_rule(v: View) -> str:
    both = v.below("rlcp", NO_CTX, 0.07) and v.below("rlcp", NO_CTX_HO, 0.07)
    one = v.below("rlcp", NO_CTX, 0.07) or v.below("rlcp", NO_CTX_HO, 0.07) or v.value("rlcp", NO_CTX) < 0.07
    return verdict(both, one)


def _retain_rule(v: View) -> str:
    orig = v.value("original", "retain.no_context_recall.train")
    return verdict(v.at_least("rlcp", "retain.no_context_recall.train", 0.8 * orig),
                   v.ci("rlcp", "retain.no_context_recall.train")[1] >= 0.4 * orig)


def _fresh_probe(claim: str, key: str) -> Claim:
    return Claim("Decodability (04, fresh probes)", claim, "≈ chance (paper: linearly undecodable)", "rlcp", key,
                 "chance inside the 95% interval (partly: the interval below half the original's accuracy)",
                 lambda v: verdict(v.at_chance("rlcp", key), v.below("rlcp", key, 0.5 * v.value("original", key))),
                 compare_to="original")


CLAIMS: list[Claim] = [
    Claim("Forgetting (Table 1)", "RLCP: no-context recall of the target facts < 7%", "< 7%", "rlcp", NO_CTX,
          "interval below 7% on training and held-out templates (partly: on one of them, or the mean only)",
          _recall_rule, compare_to="original"),
    Claim("Forgetting (Table 1)", "RLCP keeps answering from context (RAG), held-out wordings", "high (target ≥ 90%)",
          "rlcp", "targets.rag_accuracy.heldout",
          "interval at or above 90% on held-out templates (partly: its upper end reaches 90%, or training templates do)",
          lambda v: verdict(v.at_least("rlcp", "targets.rag_accuracy.heldout", 0.9),
                            v.ci("rlcp", "targets.rag_accuracy.heldout")[1] >= 0.9
                            or v.at_least("rlcp", "targets.rag_accuracy.train", 0.9)),
          compare_to="original"),
    Claim("Forgetting (Table 1)", "Just-RAG's probe still reads the facts", "88.5%", "just_rag", ADV,
          "interval at or above 75% (partly: at or above 25%)",
          lambda v: verdict(v.at_least("just_rag", ADV, 0.75), v.at_least("just_rag", ADV, 0.25))),
    Claim("Forgetting (Table 1)", "RLCP's adversary probe at chance", "≈ 6.7% (1/15)", "rlcp", ADV,
          "chance inside the 95% interval", lambda v: verdict(v.at_chance("rlcp", ADV))),
    Claim("Forgetting (not claimed, implied)", "Forgetting is targeted: retain facts keep their recall", "not measured",
          "rlcp", "retain.no_context_recall.train",
          "interval at or above 80% of the original's retain recall (partly: its upper end reaches 40%)",
          _retain_rule, compare_to="original"),
    _fresh_probe("Facts linearly undecodable at l*: fresh fact probe, held-out templates",
                 "heldout_probe_accuracy.fact.linear.last"),
    _fresh_probe("The targets' country undecodable at l*: country probe from other cities, last token",
                 "heldout_probe_accuracy.country_target.linear.last"),
    _fresh_probe("… and at the city token (where the entity is looked up)",
                 "heldout_probe_accuracy.country_target.linear.city"),
    *[Claim("Geometry (05, Fig. 1)", f"Cities and fruits intermixed at l*, {ctx} context (type probe on held-out entities)",
            "intermixed (t-SNE)", "rlcp", f"collapse.{ctx}.type_probe_heldout_entities",
            "interval at or below 50% (chance 1/3; partly: interval below the original's)",
            lambda v, ctx=ctx: verdict(v.ci("rlcp", f"collapse.{ctx}.type_probe_heldout_entities")[1] <= 0.5,
                                       v.interval_below("rlcp", "original", f"collapse.{ctx}.type_probe_heldout_entities")),
            compare_to="original")
      for ctx in ["question", "entity"]],
    *[Claim("Geometry (05, Fig. 2)", f"Entities collapse to type centroids, {ctx} context: within-type ÷ between-centroid distance",
            "collapse (picture)", "rlcp", f"collapse.{ctx}.within_to_between",
            "interval below the original's and target-city identity NN ≤ chance + 10 points (partly: one of the two)",
            lambda v, ctx=ctx: (lambda a, b: verdict(a and b, a or b))(
                v.interval_below("rlcp", "original", f"collapse.{ctx}.within_to_between"),
                v.value("rlcp", f"collapse.{ctx}.identity_nn.city_target")
                <= v.chance("rlcp", f"collapse.{ctx}.identity_nn.city_target") + 0.10),
            pct=False, compare_to="original")
      for ctx in ["question", "entity"]],
    Claim("Attention (06, Fig. 3)", "Attention at l* sharpens: entropy over the context (nats)", "1.59 → 0.90",
          "rlcp", "attention.entropy_context.target", "RLCP's interval below Just-RAG's (partly: lower mean)",
          lambda v: verdict(v.interval_below("rlcp", "just_rag", "attention.entropy_context.target"),
                            v.value("rlcp", "attention.entropy_context.target") < v.value("just_rag", "attention.entropy_context.target")),
          pct=False, compare_to="just_rag"),
    Claim("Attention (06, Fig. 4)", "Attention on the evidence token at l*", "< 0.1 → ≈ 0.7", "rlcp",
          "attention.evidence_weight.target", "RLCP ≥ 0.5 and Just-RAG < 0.2 (partly: RLCP's interval above Just-RAG's)",
          lambda v: verdict(v.at_least("rlcp", "attention.evidence_weight.target", 0.5)
                            and v.below("just_rag", "attention.evidence_weight.target", 0.2),
                            v.interval_below("just_rag", "rlcp", "attention.evidence_weight.target")),
          pct=False, compare_to="just_rag"),
    Claim("GSM8K (07, Table 2)", "RLCP writes 'Step 1 / Step 2' scaffolding", "emerges (examples)", "rlcp", "gsm8k.step_headers",
          "paired difference to the original with its interval above 0 and larger than Just-RAG's (partly: above 0 only)",
          lambda v: verdict(v.ci("rlcp", "gsm8k.step_headers.minus_original")[0] > 0
                            and v.value("rlcp", "gsm8k.step_headers.minus_original") > v.value("just_rag", "gsm8k.step_headers.minus_original"),
                            v.ci("rlcp", "gsm8k.step_headers.minus_original")[0] > 0),
          compare_to="original"),
    Claim("GSM8K (07)", "Replies get longer (the paper's alternative explanation: KL verbosity)", "raised as possible", "rlcp",
          "gsm8k.n_tokens", "paired difference to the original (tokens) with its interval above 0 (partly: mean above 0)",
          lambda v: verdict(v.ci("rlcp", "gsm8k.n_tokens.minus_original")[0] > 0, v.value("rlcp", "gsm8k.n_tokens.minus_original") > 0),
          pct=False, compare_to="original"),
    Claim("GSM8K (07)", "Reasoning kept or improved: GSM8K accuracy", "(implied)", "rlcp", "gsm8k.correct",
          "paired difference interval includes or is above 0; inconclusive when the original scores ≤ 5% (floor)",
          lambda v: "inconclusive" if v.value("original", "gsm8k.correct") <= 0.05 else
          verdict(v.ci("rlcp", "gsm8k.correct.minus_original")[1] >= 0, v.value("rlcp", "gsm8k.correct.minus_original") >= 0),
          compare_to="original"),
]


# --- the unlearning benchmark (08): our questions, not the paper's claims (verdicts: met / partly / not met) ---

BENCH = "Unlearning benchmark (08)"
FIELD_ARMS = ("grad_diff", "npo", "rmu")
FORGOTTEN = 0.10  # "forgets": no-context recall on held-out wordings at most 10%
RETAIN_HO = "retain_heldout.no_context_recall.heldout"


def goal(full: bool, part: bool = False) -> str:
    return "met" if full else ("partly" if part else "not met")


def _forgets(v: View, arm: str) -> bool:
    return v.ci(arm, NO_CTX_HO)[1] <= FORGOTTEN


def _adversary_buys(v: View) -> str:
    """RLCP against the field's methods that also forget: less collateral (its held-out retain interval above
    theirs) or harder to relearn (its recovery interval below theirs). Worse on either (its retain interval
    below some such method's, or its recovery interval above some such method's) makes it 'not met' unless it
    is better on the other."""
    rivals = [a for a in FIELD_ARMS if _has(v, a, NO_CTX_HO) and _forgets(v, a)]
    if not _forgets(v, "rlcp") or not rivals:
        return "not met" if rivals else "inconclusive"
    rec = "relearn.recovery"
    less_damage = all(v.interval_below(a, "rlcp", RETAIN_HO) for a in rivals)
    harder = _has(v, "rlcp", rec) and all(_has(v, a, rec) and v.interval_below("rlcp", a, rec) for a in rivals)
    worse = (any(v.interval_below("rlcp", a, RETAIN_HO) for a in rivals)
             or (_has(v, "rlcp", rec) and any(_has(v, a, rec) and v.interval_below(a, "rlcp", rec) for a in rivals)))
    return goal(less_damage or harder, not worse)


def _has(v: View, arm: str, key: str) -> bool:
    try:
        v.row(arm, key)
        return True
    except Missing:
        return False


CLAIMS += [
    Claim(BENCH, "Selective RLCP forgets the targets (no-context recall ≤ 10%, held-out wordings)", "(our goal)",
          "selective_rlcp", NO_CTX_HO, "interval at or below 10% (partly: the mean only)",
          lambda v: goal(_forgets(v, "selective_rlcp"), v.value("selective_rlcp", NO_CTX_HO) <= FORGOTTEN),
          compare_to="original"),
    Claim(BENCH, "Selective RLCP keeps the held-out retain facts (≥ 90% of the original's recall)", "(our goal)",
          "selective_rlcp", RETAIN_HO, "interval at or above 90% of the original's mean (partly: the mean only)",
          lambda v: goal(v.at_least("selective_rlcp", RETAIN_HO, 0.9 * v.value("original", RETAIN_HO)),
                         v.value("selective_rlcp", RETAIN_HO) >= 0.9 * v.value("original", RETAIN_HO)),
          compare_to="original"),
    Claim(BENCH, "Selective RLCP answers from context on held-out wordings (RAG ≥ 85%)", "(our goal)",
          "selective_rlcp", "targets.rag_accuracy.heldout", "interval at or above 85% (partly: the mean only)",
          lambda v: goal(v.at_least("selective_rlcp", "targets.rag_accuracy.heldout", 0.85),
                         v.value("selective_rlcp", "targets.rag_accuracy.heldout") >= 0.85)),
    Claim(BENCH, "Selective RLCP's no-context answers about the targets still name a country (≥ 90%)", "(our goal)",
          "selective_rlcp", "fluency.names_a_country.targets", "interval at or above 90% (partly: the mean only)",
          lambda v: goal(v.at_least("selective_rlcp", "fluency.names_a_country.targets", 0.9),
                         v.value("selective_rlcp", "fluency.names_a_country.targets") >= 0.9),
          compare_to="original"),
    Claim(BENCH, "RLCP's adversary buys something over GradDiff, NPO and RMU (less collateral or harder to relearn, "
          "among methods that forget)", "(implied: RLCP's advantage)", "rlcp", RETAIN_HO,
          "RLCP and a field method both forget (held-out recall interval ≤ 10%); met: RLCP's held-out retain interval "
          "above every such method's, or its relearning recovery interval below; not met: some such method's retain "
          "interval above RLCP's or recovery interval below RLCP's (and neither advantage), or RLCP does not forget; "
          "partly otherwise; inconclusive: no field method forgets",
          _adversary_buys),
]


# --- the paper's open questions (09): its limitations 1-4 as testable statements ------------------------------

OPEN = "Open questions (09)"


def _fact_count_arms(v: View) -> dict[int, str]:
    """The fact-count settings of 09, part 3 (arms rlcp_<n>facts), by their number of target facts."""
    return {int(m.group(1)): arm for arm in v.table.index.get_level_values("arm").unique()
            if (m := re.fullmatch(r"rlcp_(\d+)facts", arm))}


def most_facts(v: View) -> str:
    """The fact-count setting with the most target facts."""
    counts = _fact_count_arms(v)
    if not counts:
        raise Missing("rlcp_<n>facts")
    return counts[max(counts)]


def _scales(v: View) -> str:
    most_facts(v)  # Missing when part 3 did not run
    arms = [*_fact_count_arms(v).values(), "rlcp"]
    forgets = [v.ci(a, NO_CTX_HO)[1] <= 0.10 for a in arms]
    rag = [v.at_least(a, "targets.rag_accuracy.heldout", 0.85) for a in arms]
    return verdict(all(forgets) and all(rag), all(forgets) or all(rag))


def _orthogonal(v: View) -> str:
    """delta below both reference cosines (two halves of the fact loss; the fact loss and other facts), at the start
    and at the end of the monitored run."""
    def small(arm, when):
        d = abs(v.value(arm, f"gradients.cosine.fact_vs_logic.{when}"))
        return all(d < abs(v.value(arm, f"gradients.cosine.{ref}.{when}"))
                   for ref in ["fact_vs_other_half_of_the_targets", "fact_vs_other_facts"])
    start, end = small("original", "start"), small("rlcp_gradients", "end")
    return verdict(start and end, start or end)


def _in_domain(v: View) -> str:
    """The addition step on the forgotten facts' two-step problems (the last number = the stated product + the
    addend, whatever product was stated): the reasoning that uses the facts, apart from the facts themselves."""
    key = "two_step.targeted.step_right"
    if v.ci("arith_rlcp", NO_CTX_HO)[1] > 0.10 or v.at_chance("arith_original", "two_step.targeted.answer_right"):
        return "inconclusive"  # the facts were not forgotten, or the original cannot do the problems
    return verdict(v.ci("arith_rlcp", key)[1] >= v.value("arith_original", key),
                   not v.interval_below("arith_rlcp", "arith_original", key))


CLAIMS += [
    Claim(OPEN, "Limitation 3: without the KL term (λ_KL = 0) GSM8K replies are shorter", "suggested (verbosity from the KL)",
          "rlcp_kl0", "kl_sweep.gsm8k.n_tokens", "λ_KL = 0's interval below the paper's λ_KL's, same problems, first seed "
          "(partly: lower mean)",
          lambda v: verdict(v.interval_below("rlcp_kl0", "rlcp", "kl_sweep.gsm8k.n_tokens"),
                            v.value("rlcp_kl0", "kl_sweep.gsm8k.n_tokens") < v.value("rlcp", "kl_sweep.gsm8k.n_tokens")),
          pct=False, compare_to="rlcp"),
    Claim(OPEN, "Limitation 3: … and loop less", "suggested", "rlcp_kl0", "kl_sweep.gsm8k.repeats_itself",
          "λ_KL = 0's interval below the paper's λ_KL's (partly: lower mean)",
          lambda v: verdict(v.interval_below("rlcp_kl0", "rlcp", "kl_sweep.gsm8k.repeats_itself"),
                            v.value("rlcp_kl0", "kl_sweep.gsm8k.repeats_itself") < v.value("rlcp", "kl_sweep.gsm8k.repeats_itself")),
          compare_to="rlcp"),
    Claim(OPEN, "Assumption 3.1: fact and reasoning gradients nearly orthogonal (δ, the absolute cosine of ∇L_fact and ∇L_logic, small)", "assumed small",
          "original", "gradients.cosine.fact_vs_logic.start",
          "δ below the cosine between two halves of the fact loss and between the fact loss and other facts, on the "
          "original and at the end of RLCP (partly: at one of the two)", _orthogonal, pct=False),
    Claim(OPEN, "Proposition 3.2: a step along ∇L_fact moves the reasoning loss by at most η·δ·‖∇L_fact‖·‖∇L_logic‖ + O(η²)",
          "bound (first order)", "original", "gradients.first_order.logic.worst_ratio",
          "|measured change| ÷ bound ≤ 1.1 at every step size η, descent and ascent (with the measured δ the bound is the "
          "first-order change itself, so this tests that the O(η²) terms stay small; partly: at the smallest η)",
          lambda v: verdict(v.value("original", "gradients.first_order.logic.worst_ratio") <= 1.1,
                            v.value("original", "gradients.first_order.logic.smallest_eta_ratio") <= 1.1), pct=False),
    Claim(OPEN, "Limitation 2: RLCP forgets more facts and still answers from context", "untested", most_facts,
          NO_CTX_HO, "at every fact count: held-out no-context recall interval ≤ 10% and RAG (held-out) interval ≥ 85% "
          "(partly: one of the two)", _scales),
    Claim(OPEN, "Limitation 1: reasoning survives forgetting its own facts (the addition step of two-step problems "
          "on forgotten multiplication facts)", "untested (orthogonality argument)", "arith_rlcp", "two_step.targeted.step_right",
          "RLCP's interval reaches the original's rate of a right addition on the stated product (partly: overlaps its "
          "interval); inconclusive when the facts are not forgotten (≤ 10%) or the original solves the problems at chance",
          _in_domain, compare_to="arith_original"),
]


def judge(record: pd.DataFrame, section: str | None = None, claims: list[Claim] | None = None) -> pd.DataFrame:
    """Every claim (or those whose section starts with `section`) with our numbers, chance, n and verdict."""
    v = View(record)
    rows = []
    for c in claims or CLAIMS:
        if section is not None and not c.section.startswith(section):
            continue
        try:
            arm = c.arm(v) if callable(c.arm) else c.arm
            ours = f"{v.shown(arm, c.key, c.pct)} ({arm})"
            if c.compare_to:
                ours = f"{v.shown(c.compare_to, c.key, c.pct)} ({c.compare_to}) → {ours}"
            ch = v.chance(arm, c.key)
            ch = "–" if math.isnan(ch) else (f"{ch:.1%}" if c.pct else f"{ch:.2f}")
            n, outcome = v.n(arm, c.key), c.judge(v)
        except Missing as err:
            ours, ch, n, outcome = f"not measured ({err.args[0]})", "–", "–", "not measured"
        rows.append({"section": c.section, "claim": c.claim, "paper": c.paper, "ours": ours, "chance": ch, "n": n,
                     "rule": c.rule, "verdict": outcome})
    return pd.DataFrame(rows)


# --- Table 1 -----------------------------------------------------------------------------------------------

TABLE1_ROWS = ["targets.rag_accuracy.train", "targets.rag_accuracy.heldout", "targets.no_context_recall.train",
               "targets.no_context_recall.heldout", "targets.adversary_probe_accuracy.train",
               "targets.adversary_probe_accuracy.heldout", "retain.no_context_recall.train", "retain.rag_accuracy.train"]
TABLE1_ARMS = ["original", "just_rag", "unlikelihood", "rlcp"]
PAPER = {("rlcp", "targets.no_context_recall.train"): "< 7%", ("just_rag", "targets.adversary_probe_accuracy.train"): "88.5%",
         ("rlcp", "targets.adversary_probe_accuracy.train"): "≈ 6.7% (chance)"}


def table1(record: pd.DataFrame) -> pd.DataFrame:
    """Table 1 in long form: per arm and metric the summary row, the per-seed range and the paper's number."""
    v = View(record)
    rows = []
    for arm in TABLE1_ARMS:
        for key in TABLE1_ROWS:
            try:
                r = v.row(arm, key)
            except Missing:
                continue
            rng = results.seed_range(record, arm, key)
            rows.append({"arm": arm, "metric": key, "value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high,
                         "seed_min": rng[0] if rng else float("nan"), "seed_max": rng[1] if rng else float("nan"),
                         "chance": r.chance, "n_facts": r.n_units, "n_prompts": r.n_prompts, "n_seeds": r.n_seeds,
                         "interval": r.interval, "paper": PAPER.get((arm, key), "")})
    return pd.DataFrame(rows)


def table1_markdown(t1: pd.DataFrame) -> str:
    """Table 1 as markdown: 'mean [interval]' and, for arms with several seeds, the range of seed means."""
    from rlcp_utils.core.outputs import markdown_table

    if t1.empty:
        return "(no results yet)\n"
    cells = []
    for r in t1.itertuples():
        cell = f"{r.value:.1%} [{r.ci_low:.0%}, {r.ci_high:.0%}]"
        if not pd.isna(r.seed_min):
            cell += f"; seeds {r.seed_min:.0%}–{r.seed_max:.0%}"
        cells.append(cell)
    pretty = t1.assign(cell=cells).pivot(index="metric", columns="arm", values="cell")
    arms = [a for a in TABLE1_ARMS if a in pretty.columns]
    seeds = {a: int(t1[t1.arm == a].n_seeds.max()) for a in arms}
    pretty = pretty.reindex(index=[k for k in TABLE1_ROWS if k in pretty.index], columns=arms)
    pretty.columns = [a if seeds[a] == 0 else f"{a} ({seeds[a]} seeds)" for a in arms]
    return markdown_table(pretty)
