"""The rules that judge the claims (claims.py): the view of the results record they read, a small vocabulary of
checks a rule is made of, and the four rules that need code.

A check compares one interval (or mean) with a named threshold (claims_thresholds.py): the claim's own arm and
metric unless it names others. The vocabulary (OPS, ARM_OPS), each on the 95% interval [lo, hi] or the mean:

    below t: hi < t          at_most t: hi ≤ t           at_least t: lo ≥ t         above t: lo > t
    reaches t: hi ≥ t        mean_below / mean_at_most / mean_at_least / mean_above t: the mean against t
    at_chance m: lo − m ≤ chance ≤ hi + m                  near_chance m: mean ≤ chance + m
    interval_below (than b) g: hi + g < b's lo             mean_below_arm / mean_above_arm (than b) g: means

t is the threshold, or that share of another arm's mean (share_of). A rule is three such conditions (checks
joined with & | ~): 'full' (reproduced, or met for our goals), 'partly' and 'inconclusive'; everything else
is 'not reproduced' ('not met'). A metric the record lacks raises Missing: the claim is 'not measured'.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from rlcp_utils.core import results
from rlcp_utils.study.claims_thresholds import AT_CHANCE, DELTA_VS_REFERENCE, FORGOTTEN, GAP, RAG_KEPT, Threshold

NO_CTX, NO_CTX_HO = "targets.no_context_recall.train", "targets.no_context_recall.heldout"
QUANT_Q4_1 = f"quant.Q4_1.{NO_CTX_HO}"  # 09: the targets read back through the offline model's own format
RAG_TR, RAG_HO = "targets.rag_accuracy.train", "targets.rag_accuracy.heldout"
ADV, ADV_HO = "targets.adversary_probe_accuracy.train", "targets.adversary_probe_accuracy.heldout"
RETAIN, RETAIN_HO = "retain.no_context_recall.train", "retain_heldout.no_context_recall.heldout"
FIELD_ARMS = ("grad_diff", "npo", "rmu")

# the verdict words for each outcome, on the paper's claims and on our own goals
VERDICTS = {"paper": {"full": "reproduced", "partly": "partly", "none": "not reproduced", "inconclusive": "inconclusive"},
            "goal": {"full": "met", "partly": "partly", "none": "not met", "inconclusive": "inconclusive"}}


class Missing(KeyError):
    """A metric this profile did not produce (an arm not trained, a notebook not run)."""


class View:
    """The summary view of a results record (results.summary), with the accessors the rules use."""

    def __init__(self, record: pd.DataFrame, fact_draw: str | None = None):
        """`fact_draw`: the rows of one fact draw only (results.summary); None: the summary over draws where there is one."""
        self.record = record if fact_draw is None else record[record.fact_draw == fact_draw]
        table = results.summary(self.record)
        self.table = table if isinstance(table.index, pd.MultiIndex) else table.set_index(["arm", "metric"])  # empty

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

    def has_interval(self, arm: str, key: str) -> bool:
        return not any(math.isnan(x) for x in self.ci(arm, key))

    def chance(self, arm: str, key: str) -> float:
        c = self.row(arm, key).chance
        return float("nan") if c is None or pd.isna(c) else float(c)

    def shown(self, arm: str, key: str, pct: bool = True) -> str:
        """'mean [interval]' (the interval left out where the record has none), then each fact draw's mean (where
        there are several) and the seeds' range."""
        fmt = (lambda x, d=1: f"{x:.{d}%}") if pct else (lambda x, d=2: f"{x:.2f}")
        text = fmt(self.value(arm, key))
        if self.has_interval(arm, key):
            lo, hi = self.ci(arm, key)
            text += f" [{fmt(lo, 0)}, {fmt(hi, 0)}]"
        by_draw = results.draw_values(self.record, arm, key)
        if by_draw:
            text += "; draws " + " / ".join(fmt(x, 0) for _, x in sorted(by_draw.items()))
        rng = results.seed_range(self.record, arm, key)
        if rng is not None:
            text += f"; seeds {fmt(rng[0], 0)}–{fmt(rng[1], 0)}"
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
        if not pd.isna(r.n_draws) and int(r.n_draws) > 1:
            parts.append(f"{int(r.n_draws)} fact draws")
        return ", ".join(parts)

    # --- the building blocks of the vocabulary ------------------------------------------------------------------
    def below(self, arm: str, key: str, threshold: float) -> bool:
        """The whole interval below the threshold."""
        return self.ci(arm, key)[1] < threshold

    def at_least(self, arm: str, key: str, threshold: float) -> bool:
        """The whole interval at or above the threshold."""
        return self.ci(arm, key)[0] >= threshold

    def at_chance(self, arm: str, key: str, margin: float = AT_CHANCE) -> bool:
        lo, hi = self.ci(arm, key)
        return lo - margin <= self.chance(arm, key) <= hi + margin

    def interval_below(self, arm_a: str, arm_b: str, key: str, gap: float = GAP) -> bool:
        """arm_a's interval lies entirely below arm_b's (by more than `gap`)."""
        return self.ci(arm_a, key)[1] + gap < self.ci(arm_b, key)[0]


OPS: dict[str, Callable[[View, str, str, float], bool]] = {
    "below": lambda v, a, k, t: v.below(a, k, t),
    "at_most": lambda v, a, k, t: v.ci(a, k)[1] <= t,
    "at_least": lambda v, a, k, t: v.at_least(a, k, t),
    "above": lambda v, a, k, t: v.ci(a, k)[0] > t,
    "reaches": lambda v, a, k, t: v.ci(a, k)[1] >= t,
    "mean_below": lambda v, a, k, t: v.value(a, k) < t,
    "mean_at_most": lambda v, a, k, t: v.value(a, k) <= t,
    "mean_at_least": lambda v, a, k, t: v.value(a, k) >= t,
    "mean_above": lambda v, a, k, t: v.value(a, k) > t,
    "at_chance": lambda v, a, k, m: v.at_chance(a, k, m),
    "near_chance": lambda v, a, k, m: v.value(a, k) <= v.chance(a, k) + m,
}
ARM_OPS: dict[str, Callable[[View, str, str, str, float], bool]] = {
    "interval_below": lambda v, a, k, b, g: v.interval_below(a, b, k, g),
    "mean_below_arm": lambda v, a, k, b, g: v.value(a, k) + g < v.value(b, k),
    "mean_above_arm": lambda v, a, k, b, g: v.value(a, k) > v.value(b, k) + g,
}


class Cond:
    """A condition of a rule: a check, or checks joined with & (all), | (any) and ~ (not)."""

    def __and__(self, other: Cond) -> Cond:
        return Joined("&", (*self._parts("&"), other))

    def __or__(self, other: Cond) -> Cond:
        return Joined("|", (*self._parts("|"), other))

    def _parts(self, how: str) -> tuple[Cond, ...]:  # a | b | c: one join of three, not two nested
        return self.parts if isinstance(self, Joined) and self.how == how else (self,)

    def __invert__(self) -> Cond:
        return Joined("~", (self,))


@dataclass(frozen=True)
class Check(Cond):
    """One comparison of the vocabulary on (arm, key): the claim's own unless given."""
    op: str
    threshold: Threshold
    arm: str | None = None
    key: str | None = None
    share_of: str | None = None  # the threshold is this share of that arm's mean (same key)
    than: str | None = None  # the other arm of a comparison between arms (ARM_OPS)

    def __post_init__(self):
        if self.op not in OPS and self.op not in ARM_OPS:
            raise ValueError(f"unknown check {self.op!r}; the vocabulary: {[*OPS, *ARM_OPS]}")
        if (self.op in ARM_OPS) != (self.than is not None) or (self.than and self.share_of):
            raise ValueError(f"{self.op}: 'than' names the other arm of {list(ARM_OPS)}, and only of those")
        if not isinstance(self.threshold, Threshold):
            raise TypeError(f"{self.op}: the threshold must be a named Threshold, got {self.threshold!r}")

    def __call__(self, v: View, arm: str, key: str) -> bool:
        arm, key = self.arm or arm, self.key or key
        if self.than is not None:
            return ARM_OPS[self.op](v, arm, key, self.than, float(self.threshold))
        limit = float(self.threshold)
        if self.share_of is not None:
            limit *= v.value(self.share_of, key)
        return OPS[self.op](v, arm, key, limit)

    def thresholds(self) -> list[Threshold]:
        return [self.threshold]

    def checks(self) -> list[Check]:
        return [self]

    def __str__(self) -> str:
        t = self.threshold.name + (f" × {self.share_of}" if self.share_of else "")
        where = "".join(f", {x}" for x in (self.arm, self.key) if x) + (f", than {self.than}" if self.than else "")
        return f"{self.op}({t}{where})"


@dataclass(frozen=True)
class Joined(Cond):
    how: str  # '&', '|' or '~'
    parts: tuple[Cond, ...]

    def __call__(self, v: View, arm: str, key: str) -> bool:
        if self.how == "~":
            return not self.parts[0](v, arm, key)
        results_ = (p(v, arm, key) for p in self.parts)  # in order, stopping early like `and` / `or`
        return all(results_) if self.how == "&" else any(results_)

    def thresholds(self) -> list[Threshold]:
        return [t for p in self.parts for t in p.thresholds()]

    def checks(self) -> list[Check]:
        return [c for p in self.parts for c in p.checks()]

    def __str__(self) -> str:
        return f"not {self.parts[0]}" if self.how == "~" else "(" + f" {self.how} ".join(map(str, self.parts)) + ")"


def outcome(full: bool, part: bool = False) -> str:
    return "full" if full else ("partly" if part else "none")


@dataclass(frozen=True)
class Rule:
    """A rule from the vocabulary; `words` says it in the report, with {THRESHOLD} placeholders filled from the
    thresholds (so the words cannot state another number than the one the rule uses)."""
    full: Cond
    partly: Cond | None = None
    inconclusive: Cond | None = None
    words: str = ""

    def outcome(self, v: View, arm: str, key: str) -> str:
        if self.inconclusive is not None and self.inconclusive(v, arm, key):
            return "inconclusive"
        full = self.full(v, arm, key)  # both evaluated: a metric either needs is missing -> not measured
        return outcome(full, self.partly(v, arm, key) if self.partly is not None else False)

    def thresholds(self) -> list[Threshold]:
        return [t for c in self.checks() for t in c.thresholds()]

    def checks(self) -> list[Check]:
        return [ch for c in (self.full, self.partly, self.inconclusive) if c is not None for ch in c.checks()]

    def __str__(self) -> str:
        parts = [("full", self.full), ("partly", self.partly), ("inconclusive", self.inconclusive)]
        return "; ".join(f"{name}: {c}" for name, c in parts if c is not None)


@dataclass(frozen=True)
class Coded:
    """A rule that needs code (`fn(view)` returns an outcome); `uses` names the thresholds it compares with."""
    fn: Callable[[View], str]
    uses: tuple[Threshold, ...]
    words: str

    def outcome(self, v: View, arm: str, key: str) -> str:
        return self.fn(v)

    def thresholds(self) -> list[Threshold]:
        return list(self.uses)

    def checks(self) -> list[Check]:
        return []  # its comparisons are code

    def __str__(self) -> str:
        return f"{self.fn.__name__}({', '.join(t.name for t in self.uses)})"


# --- the four rules that need code -----------------------------------------------------------------------------

def has(v: View, arm: str, key: str) -> bool:
    try:
        v.row(arm, key)
        return True
    except Missing:
        return False


def forgets(v: View, arm: str) -> bool:
    return v.ci(arm, NO_CTX_HO)[1] <= FORGOTTEN


def adversary_buys(v: View) -> str:
    """RLCP against the field's methods that also forget: less collateral (its held-out retain interval above
    theirs) or harder to relearn (its recovery interval below theirs). Worse on either (its retain interval
    below some such method's, or its recovery interval above some such method's) makes it 'not met' unless it
    is better on the other."""
    rivals = [a for a in FIELD_ARMS if has(v, a, NO_CTX_HO) and forgets(v, a)]
    if not forgets(v, "rlcp") or not rivals:
        return "none" if rivals else "inconclusive"
    rec = "relearn.recovery"
    less_damage = all(v.interval_below(a, "rlcp", RETAIN_HO) for a in rivals)
    harder = has(v, "rlcp", rec) and all(has(v, a, rec) and v.interval_below("rlcp", a, rec) for a in rivals)
    worse = (any(v.interval_below("rlcp", a, RETAIN_HO) for a in rivals)
             or (has(v, "rlcp", rec) and any(has(v, a, rec) and v.interval_below(a, "rlcp", rec) for a in rivals)))
    return outcome(less_damage or harder, not worse)


def fact_count_arms(v: View) -> dict[int, str]:
    """The fact-count settings of 13_fact_counts (arms rlcp_<n>facts), by their number of target facts."""
    return {int(m.group(1)): arm for arm in v.table.index.get_level_values("arm").unique()
            if (m := re.fullmatch(r"rlcp_(\d+)facts", arm))}


def most_facts(v: View) -> str:
    """The fact-count setting with the most target facts."""
    counts = fact_count_arms(v)
    if not counts:
        raise Missing("rlcp_<n>facts")
    return counts[max(counts)]


def scales(v: View) -> str:
    """Every fact count (and 03's RLCP) forgets and still answers from context."""
    most_facts(v)  # Missing when 13 did not run
    arms = [*fact_count_arms(v).values(), "rlcp"]
    forget = [forgets(v, a) for a in arms]
    rag = [v.at_least(a, RAG_HO, RAG_KEPT) for a in arms]
    return outcome(all(forget) and all(rag), all(forget) or all(rag))


def orthogonal(v: View) -> str:
    """δ below both reference cosines (two halves of the fact loss; the fact loss and other facts), at the start
    and at the end of the monitored run."""
    def small(arm, when):
        d = abs(v.value(arm, f"gradients.cosine.fact_vs_logic.{when}"))
        return all(d < DELTA_VS_REFERENCE * abs(v.value(arm, f"gradients.cosine.{ref}.{when}"))
                   for ref in ["fact_vs_other_half_of_the_targets", "fact_vs_other_facts"])
    start, end = small("original", "start"), small("rlcp_gradients", "end")
    return outcome(start and end, start or end)
