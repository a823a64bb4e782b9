"""The paper's claims (and our own benchmark goals) as one table, and the one function that judges them.

Each row of CLAIMS: the section (the notebook that measures it), the claim, the paper's number, the arm and the
metric key it reads, and its rule: checks from a small vocabulary (claims_rules.py: below, at_least, at_chance,
interval_below, ...) against named thresholds, each defined once with its justification, the paper's or a
stated convention (claims_thresholds.py). `claims_table()` lists the rows with their thresholds and reasons.

Notebook 03 shows the Table 1 subset (section 'Forgetting ...'), 08-10 the unlearning benchmark's, 15_report all
of them; all call `judge`, so a claim gets the same verdict wherever it is shown. Every rule reads the interval,
not only the mean: for a trained arm the interval is the two-level bootstrap over training seeds and facts, so
a verdict holds across seeds. 'reproduced' needs the whole interval on the paper's side of the rule's
threshold; 'not reproduced' the whole interval on the other side (or the rule's own fallback); 'partly' is in
between, as each rule says. A statistic the record has no interval for is shown as such ("no interval (...)").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from rlcp_utils.core import results
from rlcp_utils.core.outputs import markdown_table
from rlcp_utils.study.claims_rules import (ADV, ADV_HO, NO_CTX, NO_CTX_HO, QUANT_Q4_1, RAG_HO, RAG_TR, RETAIN, RETAIN_HO, VERDICTS, Check,
                                           Coded, Missing, Rule, View, adversary_buys, most_facts, orthogonal, scales)
from rlcp_utils.study.claims_thresholds import (AT_CHANCE, COUNTRY_NAMED, DELTA_VS_REFERENCE, EVIDENCE_FOCUSED,
                                                EVIDENCE_IGNORED, FIRST_ORDER_SLACK, FORGOTTEN, GAP, GSM8K_FLOOR,
                                                NEAR_CHANCE, NO_CHANGE, ORIGINAL_RATE, PROBE_ABOVE_CHANCE, PROBE_HALVED,
                                                PROBE_READS, RAG_KEPT, RECALL_GONE, RETAIN_KEPT, RETAIN_SHARE,
                                                RETAIN_SHARE_PARTLY, THRESHOLDS, TYPE_MIXED, Threshold)


@dataclass(frozen=True)
class Claim:
    section: str
    claim: str  # may name thresholds as {NAME}: filled in from claims_thresholds when the row is made
    paper: str  # the paper's number or words (ours: '(our goal)')
    arm: str | Callable[[View], str]  # a name, or a function of the record (a sweep's setting named by its parameters)
    key: str
    rule: Rule | Coded
    pct: bool = True
    compare_to: str | None = None  # the arm the claim contrasts with, shown before ours ("original → rlcp")
    scale: str = "paper"  # 'paper': reproduced / partly / not reproduced; 'goal' (our own): met / partly / not met
    no_interval: str = ""  # why the record has no interval for this statistic (shown instead of one)
    template: str = field(default="", init=False, repr=False, compare=False)  # the claim before filling in

    def __post_init__(self):  # the claim's {THRESHOLD} names filled in; words that name another threshold fail here
        object.__setattr__(self, "template", self.claim)
        object.__setattr__(self, "claim", self.claim.format(**{n: t.shown for n, t in THRESHOLDS.items()}))
        self.words  # noqa: B018

    @property
    def words(self) -> str:
        """The rule in words, its thresholds filled in."""
        return self.rule.words.format(**{t.name: t.shown for t in self.rule.thresholds()})

    def thresholds(self) -> list[Threshold]:
        """The thresholds of the rule, each once, in order of use."""
        return list({t.name: t for t in self.rule.thresholds()}.values())


# --- the vocabulary, spelled for the table (a check on the claim's own arm and key unless named) -----------------

def below(t, **kw): return Check("below", t, **kw)
def at_most(t, **kw): return Check("at_most", t, **kw)
def at_least(t, **kw): return Check("at_least", t, **kw)
def above(t, **kw): return Check("above", t, **kw)
def reaches(t, **kw): return Check("reaches", t, **kw)
def mean_below(t, **kw): return Check("mean_below", t, **kw)
def mean_at_most(t, **kw): return Check("mean_at_most", t, **kw)
def mean_at_least(t, **kw): return Check("mean_at_least", t, **kw)
def mean_above(t, **kw): return Check("mean_above", t, **kw)
def at_chance(**kw): return Check("at_chance", AT_CHANCE, **kw)
def near_chance(t, **kw): return Check("near_chance", t, **kw)
def interval_below(than, **kw): return Check("interval_below", GAP, than=than, **kw)
def mean_below_arm(than, **kw): return Check("mean_below_arm", GAP, than=than, **kw)
def mean_above_arm(than, **kw): return Check("mean_above_arm", GAP, than=than, **kw)


FORGET = "Forgetting (03, Table 1)"
BENCH = "Unlearning benchmark"  # the prefix of its sections (08 trains, 09 relearns, 10 checks fluency)
OPEN = "Open questions"  # the prefix of the open questions' sections (11-14)
NO_GRADIENT_CI = ("δ is one cosine between two gradients, each of the mean loss over all its prompts; "
                  "12_gradient_geometry does not bootstrap it over the prompts yet")
NO_FIRST_ORDER_CI = ("the worst ratio over single steps of the original along one gradient; 12_gradient_geometry "
                     "does not bootstrap it over the L_logic prompts yet")


def _fresh_probe(claim: str, key: str) -> Claim:
    return Claim("Decodability (04, fresh probes)", claim, "≈ chance (paper: linearly undecodable)", "rlcp", key,
                 Rule(at_chance(), below(PROBE_HALVED, share_of="original"),
                      words="chance inside the 95% interval (partly: the interval below {PROBE_HALVED} of the "
                      "original's accuracy)"), compare_to="original")


def _type_probe(ctx: str) -> Claim:
    return Claim("Geometry (05, Fig. 1)", f"Cities and fruits intermixed at l*, {ctx} context (type probe on held-out "
                 "entities)", "intermixed (t-SNE)", "rlcp", f"collapse.{ctx}.type_probe_heldout_entities",
                 Rule(at_most(TYPE_MIXED), interval_below("original"),
                      words="interval at or below {TYPE_MIXED} (chance 1/3; partly: interval below the original's)"),
                 compare_to="original")


def _collapse(ctx: str) -> Claim:
    closer = interval_below("original")
    same_identity = near_chance(NEAR_CHANCE, key=f"collapse.{ctx}.identity_nn.city_target")
    return Claim("Geometry (05, Fig. 2)", f"Entities collapse to type centroids, {ctx} context: within-type ÷ "
                 "between-centroid distance", "collapse (picture)", "rlcp", f"collapse.{ctx}.within_to_between",
                 Rule(closer & same_identity, closer | same_identity,
                      words="interval below the original's and target-city identity NN ≤ chance + {NEAR_CHANCE} "
                      "(partly: one of the two)"), pct=False, compare_to="original")


def _kl_sweep(claim: str, paper: str, key: str, words: str, pct: bool) -> Claim:
    return Claim(f"{OPEN} (11, KL and verbosity)", claim, paper, "rlcp_kl0", key,
                 Rule(interval_below("rlcp"), mean_below_arm("rlcp"), words=words), pct=pct, compare_to="rlcp")


STEPS, TOKENS, CORRECT = "gsm8k.step_headers.minus_original", "gsm8k.n_tokens.minus_original", "gsm8k.correct.minus_original"
EVIDENCE = "attention.evidence_weight.target"

CLAIMS: list[Claim] = [
    Claim(FORGET, "RLCP: no-context recall of the target facts < {RECALL_GONE}", "< 7%", "rlcp", NO_CTX,
          Rule(below(RECALL_GONE) & below(RECALL_GONE, key=NO_CTX_HO),
               below(RECALL_GONE) | below(RECALL_GONE, key=NO_CTX_HO) | mean_below(RECALL_GONE),
               words="interval below {RECALL_GONE} on training and held-out templates (partly: on one of them, or "
               "the mean only)"), compare_to="original"),
    Claim(FORGET, "RLCP keeps answering from context (RAG), held-out wordings", "high", "rlcp", RAG_HO,
          Rule(at_least(RAG_KEPT), reaches(RAG_KEPT) | at_least(RAG_KEPT, key=RAG_TR),
               words="interval at or above {RAG_KEPT} on held-out templates (partly: its upper end reaches "
               "{RAG_KEPT}, or training templates do)"), compare_to="original"),
    Claim(FORGET, "Just-RAG's probe still reads the facts", "88.5%", "just_rag", ADV,
          Rule(at_least(PROBE_READS), at_least(PROBE_ABOVE_CHANCE),
               words="interval at or above {PROBE_READS} (partly: at or above {PROBE_ABOVE_CHANCE})")),
    # judged on held-out wordings: at its own training wordings the adversary was optimised against the model,
    # so chance there says less than chance on wordings neither of them trained on
    Claim(FORGET, "RLCP's adversary probe at chance, held-out wordings", "≈ 6.7% (1/15)", "rlcp", ADV_HO,
          Rule(at_chance(), at_chance(key=ADV),
               words="chance inside the 95% interval on held-out templates (partly: on the training templates only)")),
    Claim("Forgetting (03, not claimed, implied)", "Forgetting is targeted: retain facts keep their recall",
          "not measured", "rlcp", RETAIN,
          Rule(at_least(RETAIN_SHARE, share_of="original"), reaches(RETAIN_SHARE_PARTLY, share_of="original"),
               words="interval at or above {RETAIN_SHARE} of the original's retain recall (partly: its upper end "
               "reaches {RETAIN_SHARE_PARTLY} of it)"), compare_to="original"),
    _fresh_probe("Facts linearly undecodable at l*: fresh fact probe, held-out templates",
                 "heldout_probe_accuracy.fact.linear.last"),
    _fresh_probe("The targets' country undecodable at l*: country probe from other cities, last token",
                 "heldout_probe_accuracy.country_target.linear.last"),
    _fresh_probe("… and at the city token (where the entity is looked up)",
                 "heldout_probe_accuracy.country_target.linear.city"),
    _type_probe("question"), _type_probe("entity"), _collapse("question"), _collapse("entity"),
    Claim("Attention (06, Fig. 3)", "Attention at l* sharpens: entropy over the context (nats)", "1.59 → 0.90",
          "rlcp", "attention.entropy_context.target",
          Rule(interval_below("just_rag"), mean_below_arm("just_rag"),
               words="RLCP's interval below Just-RAG's (partly: lower mean)"), pct=False, compare_to="just_rag"),
    Claim("Attention (06, Fig. 4)", "Attention on the evidence token at l*", "< 0.1 → ≈ 0.7", "rlcp", EVIDENCE,
          Rule(at_least(EVIDENCE_FOCUSED) & below(EVIDENCE_IGNORED, arm="just_rag"),
               interval_below("rlcp", arm="just_rag"),
               words="RLCP's interval at or above {EVIDENCE_FOCUSED} and Just-RAG's below {EVIDENCE_IGNORED} "
               "(partly: RLCP's interval above Just-RAG's)"), pct=False, compare_to="just_rag"),
    Claim("GSM8K (07, Table 2)", "RLCP writes 'Step 1 / Step 2' scaffolding", "emerges (examples)", "rlcp",
          "gsm8k.step_headers",
          Rule(above(NO_CHANGE, key=STEPS) & mean_above_arm("just_rag", key=STEPS), above(NO_CHANGE, key=STEPS),
               words="paired difference to the original with its interval above {NO_CHANGE} and larger than "
               "Just-RAG's (partly: above {NO_CHANGE} only)"), compare_to="original"),
    Claim("GSM8K (07)", "Replies get longer (the paper's alternative explanation: KL verbosity)", "raised as possible",
          "rlcp", "gsm8k.n_tokens",
          Rule(above(NO_CHANGE, key=TOKENS), mean_above(NO_CHANGE, key=TOKENS),
               words="paired difference to the original (tokens) with its interval above {NO_CHANGE} (partly: mean "
               "above {NO_CHANGE})"), pct=False, compare_to="original"),
    Claim("GSM8K (07)", "Reasoning kept or improved: GSM8K accuracy", "(implied)", "rlcp", "gsm8k.correct",
          Rule(reaches(NO_CHANGE, key=CORRECT), mean_at_least(NO_CHANGE, key=CORRECT),
               inconclusive=mean_at_most(GSM8K_FLOOR, arm="original"),
               words="paired difference interval includes or is above {NO_CHANGE} (partly: its mean is); "
               "inconclusive when the original scores ≤ {GSM8K_FLOOR} (floor)"), compare_to="original"),
    # --- the unlearning benchmark: our goals, not the paper's claims (met / partly / not met) ---------------------
    Claim(f"{BENCH} (08)", "Selective RLCP forgets the targets (no-context recall ≤ {FORGOTTEN}, held-out wordings)",
          "(our goal)", "selective_rlcp", NO_CTX_HO,
          Rule(at_most(FORGOTTEN), mean_at_most(FORGOTTEN), words="interval at or below {FORGOTTEN} (partly: the "
               "mean only)"), compare_to="original", scale="goal"),
    Claim(f"{BENCH} (08)", "Selective RLCP keeps the held-out retain facts (≥ {RETAIN_KEPT} of the original's recall)",
          "(our goal)", "selective_rlcp", RETAIN_HO,
          Rule(at_least(RETAIN_KEPT, share_of="original"), mean_at_least(RETAIN_KEPT, share_of="original"),
               words="interval at or above {RETAIN_KEPT} of the original's mean (partly: the mean only)"),
          compare_to="original", scale="goal"),
    Claim(f"{BENCH} (08)", "Selective RLCP answers from context on held-out wordings (RAG ≥ {RAG_KEPT})", "(our goal)",
          "selective_rlcp", RAG_HO,
          Rule(at_least(RAG_KEPT), mean_at_least(RAG_KEPT), words="interval at or above {RAG_KEPT} (partly: the mean "
               "only)"), scale="goal"),
    Claim(f"{BENCH} (10, fluency)", "Selective RLCP's no-context answers about the targets still name a country "
          "(≥ {COUNTRY_NAMED})", "(our goal)", "selective_rlcp", "fluency.names_a_country.targets",
          Rule(at_least(COUNTRY_NAMED), mean_at_least(COUNTRY_NAMED), words="interval at or above {COUNTRY_NAMED} "
               "(partly: the mean only)"), compare_to="original", scale="goal"),
    Claim(f"{BENCH} (09, quantization)", "RLCP's forgetting survives the offline model's own 4-bit format: no-context "
          "recall of the targets read back through Q4_1 ≤ {FORGOTTEN} (held-out wordings)", "(the field's cheap attack: "
          "Zhang et al. 2025)", "rlcp", QUANT_Q4_1,
          Rule(at_most(FORGOTTEN), mean_at_most(FORGOTTEN), words="interval at or below {FORGOTTEN} (partly: the mean "
               "only)"), compare_to="original", scale="goal"),
    Claim(f"{BENCH} (08 collateral, 09 relearning)", "RLCP's adversary buys something over GradDiff, NPO and RMU "
          "(less collateral or harder to relearn, among methods that forget)", "(implied: RLCP's advantage)", "rlcp",
          RETAIN_HO, Coded(adversary_buys, (FORGOTTEN, GAP), words=(
              "RLCP and a field method both forget (held-out recall interval ≤ {FORGOTTEN}); met: RLCP's held-out "
              "retain interval above every such method's, or its relearning recovery interval below; not met: some "
              "such method's retain interval above RLCP's or recovery interval below RLCP's (and neither advantage), "
              "or RLCP does not forget; partly otherwise; inconclusive: no field method forgets")), scale="goal"),
    # --- the paper's open questions: its limitations 1-4 as testable statements ----------------------------------
    _kl_sweep("Limitation 3: without the KL term (λ_KL = 0) GSM8K replies are shorter",
              "suggested (verbosity from the KL)", "kl_sweep.gsm8k.n_tokens", "λ_KL = 0's interval below the paper's "
              "λ_KL's, same problems, first seed (partly: lower mean)", pct=False),
    _kl_sweep("Limitation 3: … and loop less", "suggested", "kl_sweep.gsm8k.repeats_itself",
              "λ_KL = 0's interval below the paper's λ_KL's (partly: lower mean)", pct=True),
    Claim(f"{OPEN} (12, gradient geometry)", "Assumption 3.1: fact and reasoning gradients nearly orthogonal (δ, the "
          "absolute cosine of ∇L_fact and ∇L_logic, small)", "assumed small", "original",
          "gradients.cosine.fact_vs_logic.start", Coded(orthogonal, (DELTA_VS_REFERENCE,), words=(
              "δ below the cosine between two halves of the fact loss and between the fact loss "
              "and other facts, on the original and at the end of RLCP (partly: at one of the two)")),
          pct=False, no_interval=NO_GRADIENT_CI),
    Claim(f"{OPEN} (12, gradient geometry)", "Proposition 3.2: a step along ∇L_fact moves the reasoning loss by at most "
          "η·δ·‖∇L_fact‖·‖∇L_logic‖ + O(η²)", "bound (first order)", "original", "gradients.first_order.logic.worst_ratio",
          Rule(mean_at_most(FIRST_ORDER_SLACK),
               mean_at_most(FIRST_ORDER_SLACK, key="gradients.first_order.logic.smallest_eta_ratio"),
               words="|measured change| ÷ bound ≤ {FIRST_ORDER_SLACK} at every step size η, descent and ascent (with "
               "the measured δ the bound is the first-order change itself, so this tests that the O(η²) terms stay "
               "small; partly: at the smallest η)"), pct=False, no_interval=NO_FIRST_ORDER_CI),
    Claim(f"{OPEN} (13, fact counts)", "Limitation 2: RLCP forgets more facts and still answers from context",
          "untested", most_facts, NO_CTX_HO, Coded(scales, (FORGOTTEN, RAG_KEPT), words=(
              "at every fact count: held-out no-context recall interval ≤ {FORGOTTEN} and RAG (held-out) interval ≥ "
              "{RAG_KEPT} (partly: one of the two)"))),
    Claim(f"{OPEN} (14, arithmetic)", "Limitation 1: reasoning survives forgetting its own facts (the addition step of "
          "two-step problems on forgotten multiplication facts)", "untested (orthogonality argument)", "arith_rlcp",
          "two_step.targeted.step_right",
          Rule(reaches(ORIGINAL_RATE, share_of="arith_original"), ~interval_below("arith_original"),
               inconclusive=(~at_most(FORGOTTEN, key=NO_CTX_HO)
                             | at_chance(arm="arith_original", key="two_step.targeted.answer_right")),
               words="RLCP's interval reaches the original's rate of a right addition on the "
               "stated product (partly: overlaps its interval); inconclusive when the facts are not forgotten "
               "(≤ {FORGOTTEN}) or the original solves the problems at chance"), compare_to="arith_original"),
]


def judge(record: pd.DataFrame, section: str | None = None, claims: list[Claim] | None = None) -> pd.DataFrame:
    """Every claim (or those whose section starts with `section`) with our numbers, chance, n and verdict. The
    Table 1 claims read the summary over fact draws (02 and 03 train every draw); every other claim compares arms
    on the study's draw, the only one the analyses and the benchmark run on (same data for every method)."""
    over_draws, study_draw = View(record), View(record, results.STUDY_DRAW)
    rows = []
    for c in claims or CLAIMS:
        if section is not None and not c.section.startswith(section):
            continue
        v = over_draws if c.section == FORGET else study_draw
        try:
            arm = c.arm(v) if callable(c.arm) else c.arm
            shown = [(a, c.key) for a in (c.compare_to, arm) if a]
            ours = " → ".join(f"{v.shown(a, k, c.pct)} ({a})" for a, k in shown)
            if not all(v.has_interval(a, k) for a, k in shown):
                ours += f"; no interval ({c.no_interval or f'the record has none for {c.key}'})"
            ch = v.chance(arm, c.key)
            ch = "–" if math.isnan(ch) else (f"{ch:.1%}" if c.pct else f"{ch:.2f}")
            n, outcome = v.n(arm, c.key), VERDICTS[c.scale][c.rule.outcome(v, arm, c.key)]
        except Missing as err:
            ours, ch, n, outcome = f"not measured ({err.args[0]})", "–", "–", "not measured"
        rows.append({"section": c.section, "claim": c.claim, "paper": c.paper, "ours": ours, "chance": ch, "n": n,
                     "rule": c.words, "verdict": outcome})
    return pd.DataFrame(rows)


def claims_table(claims: list[Claim] | None = None) -> pd.DataFrame:
    """The claims as data: per claim the metric it reads, its rule (the vocabulary's checks, and in words), its
    thresholds and their justifications (the paper's or a stated convention)."""
    rows = []
    for c in claims or CLAIMS:
        ts = c.thresholds()
        rows.append({"section": c.section, "claim": c.claim, "paper": c.paper,
                     "arm": c.arm if isinstance(c.arm, str) else f"{c.arm.__name__}()", "metric": c.key,
                     "rule": str(c.rule), "rule_words": c.words, "threshold": ", ".join(repr(t) for t in ts),
                     "justification": " | ".join(f"{t.name} ({t.basis}): {t.why}" for t in ts)})
    return pd.DataFrame(rows)


def thresholds_table(claims: list[Claim] | None = None) -> pd.DataFrame:
    """Every threshold once: its value, basis, justification and the claims that use it."""
    used = {name: [c.claim for c in claims or CLAIMS if name in {t.name for t in c.thresholds()}] for name in THRESHOLDS}
    return pd.DataFrame([{"threshold": t.name, "value": t.shown, "basis": t.basis, "justification": t.why,
                          "claims": len(used[t.name])} for t in THRESHOLDS.values()])


def placeholders(text: str) -> list[str]:
    """The {THRESHOLD} names a claim's text or words refer to."""
    return re.findall(r"\{([A-Z_0-9]+)\}", text)


# --- Table 1 -----------------------------------------------------------------------------------------------

TABLE1_ROWS = ["targets.rag_accuracy.train", "targets.rag_accuracy.heldout", "targets.no_context_recall.train",
               "targets.no_context_recall.heldout", "targets.adversary_probe_accuracy.train",
               "targets.adversary_probe_accuracy.heldout", "retain.no_context_recall.train", "retain.rag_accuracy.train"]
TABLE1_ARMS = ["original", "just_rag", "unlikelihood", "rlcp"]
# the paper's numbers beside ours; its probe accuracy names no wording split: shown beside both of ours (the claim
# "at chance" reads the held-out one)
PAPER = {("rlcp", NO_CTX): "< 7%", **{(arm, key): number for key in (ADV, ADV_HO)
                                      for arm, number in [("just_rag", "88.5%"), ("rlcp", "≈ 6.7% (chance)")]}}


def table1(record: pd.DataFrame) -> pd.DataFrame:
    """Table 1 in long form: per arm and metric the summary row (over fact draws where there are several), each
    draw's mean (draw_<d>), the per-seed range (every draw's seeds) and the paper's number."""
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
                         **{f"draw_{d}": x for d, x in sorted(results.draw_values(record, arm, key).items())},
                         "seed_min": rng[0] if rng else float("nan"), "seed_max": rng[1] if rng else float("nan"),
                         "chance": r.chance, "n_facts": r.n_units, "n_prompts": r.n_prompts, "n_seeds": r.n_seeds,
                         "n_draws": r.n_draws, "interval": r.interval, "paper": PAPER.get((arm, key), "")})
    return pd.DataFrame(rows)


def table1_markdown(t1: pd.DataFrame) -> str:
    """Table 1 as markdown: 'mean [interval]', each fact draw's mean where there are several, and for arms with
    several seeds the range of the seed means."""
    if t1.empty:
        return "(no results yet)\n"
    draw_cols = sorted((c for c in t1.columns if c.startswith("draw_")), key=lambda c: int(c.split("_")[1]))
    cells = []
    for r in t1.to_dict("records"):
        cell = f"{r['value']:.1%} [{r['ci_low']:.0%}, {r['ci_high']:.0%}]"
        by_draw = [r[c] for c in draw_cols if not pd.isna(r[c])]
        if by_draw:
            cell += "; draws " + " / ".join(f"{x:.0%}" for x in by_draw)
        if not pd.isna(r["seed_min"]):
            cell += f"; seeds {r['seed_min']:.0%}–{r['seed_max']:.0%}"
        cells.append(cell)
    pretty = t1.assign(cell=cells).pivot(index="metric", columns="arm", values="cell")
    arms = [a for a in TABLE1_ARMS if a in pretty.columns]
    seeds = {a: int(t1[t1.arm == a].n_seeds.max()) for a in arms}
    draws = {a: int(t1[t1.arm == a].n_draws.max()) for a in arms}
    pretty = pretty.reindex(index=[k for k in TABLE1_ROWS if k in pretty.index], columns=arms)
    pretty.columns = [_arm_header(a, seeds[a], draws[a]) for a in arms]
    return markdown_table(pretty)


def _arm_header(arm: str, n_seeds: int, n_draws: int) -> str:
    if not n_seeds:  # the untrained original
        return arm + (f" ({n_draws} fact draws)" if n_draws > 1 else "")
    seeds = f"{n_seeds} seed{'s' if n_seeds > 1 else ''}"
    return f"{arm} ({n_draws} fact draws × {seeds})" if n_draws > 1 else f"{arm} ({seeds})"


SPREAD_METRICS = ["targets.rag_accuracy.heldout", "targets.no_context_recall.heldout", "retain.no_context_recall.train",
                  "targets.adversary_probe_accuracy.heldout"]


def draw_spread(record: pd.DataFrame, metrics: list[str] = TABLE1_ROWS) -> pd.DataFrame:
    """Per trained Table 1 arm and metric: the spread between fact draws (standard deviation and range of the
    draws' summaries over seeds, as the record has them) next to the spread between training seeds within a draw (the
    standard deviation of the per-seed means of each draw, averaged over draws), and the arm's summary
    (results.summary: over draws where there are several). Empty rows are left out."""
    rows, summary = [], results.summary(record)
    for arm in TABLE1_ARMS[1:]:
        for key in metrics:
            of_metric = record[(record.arm == arm) & (record.metric == key) & (record.fact_draw != "all")]
            per_seed = of_metric[of_metric.seed != "all"]
            if per_seed.empty:
                continue
            draw_means = of_metric[of_metric.seed == "all"].set_index("fact_draw").value.astype(float).sort_index()
            seed_sd = per_seed.groupby("fact_draw").value.std(ddof=1).dropna()
            over = summary.loc[(arm, key)]
            rows.append({"arm": arm, "metric": key, "n_draws": len(draw_means), "n_seeds": int(per_seed.groupby("fact_draw").size().max()),
                         "value": float(over.value), "ci_low": float(over.ci_low), "ci_high": float(over.ci_high),
                         "draw_sd": float(draw_means.std(ddof=1)) if len(draw_means) > 1 else float("nan"),
                         "draw_range": float(draw_means.max() - draw_means.min()),
                         "seed_sd_within_draw": float(seed_sd.mean()) if len(seed_sd) else float("nan"),
                         **{f"draw_{d}": float(x) for d, x in draw_means.items()}})
    return pd.DataFrame(rows)
