"""The results record, the seed summary (two-level bootstrap) and the claim rules, on hand-made rows."""

import numpy as np
import pandas as pd
import pytest

from rlcp_utils.core import results
from rlcp_utils.measures import evaluate
from rlcp_utils.study import claims, claims_rules
from rlcp_utils.core.config import load_profile


@pytest.fixture
def profile(tmp_path, monkeypatch):
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path))
    return load_profile("smoke")


def _row(arm, metric, value, lo, hi, seed="all", n_seeds=3, chance=0.0, **kw):
    return {"arm": arm, "seed": seed, "metric": metric, "value": value, "ci_low": lo, "ci_high": hi, "chance": chance,
            "unit": "facts", "n_units": 15, "n_prompts": 105, "n_seeds": n_seeds, **kw}


def test_write_and_load_roundtrip(profile):
    results.write(profile, "02_baselines", [_row("just_rag", "targets.rag_accuracy.train", 1.0, 1.0, 1.0)])
    results.write(profile, "01_data", [_row("original", "targets.rag_accuracy.train", 0.9, 0.8, 0.95, n_seeds=0)])
    df = results.load(profile)
    assert list(df.columns) == results.COLUMNS and len(df) == 2
    assert set(df.notebook) == {"01_data", "02_baselines"} and df.seed.tolist() == ["all", "all"]
    text = (results.results_dir(profile) / "01_data.csv").read_text()
    assert ",15,105,0" in text  # counts stay integers


def _csv(*rows: dict) -> str:
    """A results file of these rows (every other column empty)."""
    return ",".join(results.COLUMNS) + "\n" + "".join(",".join(str(r.get(c, "")) for c in results.COLUMNS) + "\n" for r in rows)


GOOD = {"notebook": "02", "arm": "rlcp", "seed": 0, "fact_draw": 0, "metric": "x", "value": 1}


@pytest.mark.parametrize("content,message", [
    ("arm,seed,metric,value\nrlcp,0,x,1\n", "missing columns"),
    (_csv({**GOOD, "seed": "zero"}), "seed must be a number or 'all'"),
    (_csv({**GOOD, "fact_draw": "first"}), "fact_draw must be a number or 'all'"),
    (_csv({**GOOD, "value": "high"}), "not numeric"),
    (_csv(GOOD, {**GOOD, "value": 2}), "appears twice"),
    (_csv({**GOOD, "arm": ""}), "empty values"),
])
def test_loader_rejects_a_malformed_file_naming_it(profile, content, message):
    folder = results.results_dir(profile)
    folder.mkdir(parents=True)
    (folder / "05_bad.csv").write_text(content)
    with pytest.raises(results.ResultsFormatError, match=message) as err:
        results.load(profile)
    assert "05_bad.csv" in str(err.value)


def test_summary_prefers_the_row_over_all_seeds():
    df = results.frame([_row("rlcp", "m", 0.5, 0.4, 0.6), _row("rlcp", "m", 0.7, 0.6, 0.8, seed="0", n_seeds=1),
                        _row("rlcp", "single", 0.1, 0.0, 0.2, seed="0", n_seeds=1)], "03")
    s = results.summary(df)
    assert s.loc[("rlcp", "m")].value == 0.5 and s.loc[("rlcp", "single")].value == 0.1
    assert results.seed_range(df, "rlcp", "m") is None  # one per-seed row: no range


def test_a_file_from_before_fact_draws_reads_as_the_study_draw(profile):
    folder = results.results_dir(profile)
    folder.mkdir(parents=True)
    old = [c for c in results.COLUMNS if c not in ("fact_draw", "n_draws")]
    (folder / "02_old.csv").write_text(",".join(old) + "\n02_old,rlcp,0,x,0.5,,,,,,,,\n")
    df = results.load(profile)
    assert list(df.columns) == results.COLUMNS
    assert df.fact_draw.tolist() == [results.STUDY_DRAW] and df.n_draws.tolist() == [1]
    # rows that name no draw are of the study's; a number becomes its label
    written = results.frame([{**_row("rlcp", "m", 0.5, 0.4, 0.6)}, {**_row("rlcp", "m", 0.6, 0.5, 0.7), "fact_draw": 2}], "02")
    assert written.fact_draw.tolist() == ["0", "2"]


def test_summary_prefers_the_row_over_fact_draws_unless_one_draw_is_asked_for():
    rows = [_row("rlcp", "m", 0.5, 0.4, 0.6, fact_draw=0), _row("rlcp", "m", 0.9, 0.8, 1.0, fact_draw=1),
            _row("rlcp", "m", 0.7, 0.3, 1.0, fact_draw="all", n_draws=2),
            _row("rlcp", "m", 0.45, 0.3, 0.6, seed="0", n_seeds=1, fact_draw=0),
            _row("rlcp", "m", 0.95, 0.9, 1.0, seed="0", n_seeds=1, fact_draw=1),
            _row("grad_diff", "m", 0.2, 0.1, 0.3, fact_draw=0)]
    df = results.frame(rows, "03")
    assert results.summary(df).loc[("rlcp", "m")].value == 0.7
    assert results.summary(df, results.STUDY_DRAW).loc[("rlcp", "m")].value == 0.5
    assert results.summary(df).loc[("grad_diff", "m")].value == 0.2  # an arm of one draw: its own summary
    assert results.draw_values(df, "rlcp", "m") == {0: 0.5, 1: 0.9} and results.draw_values(df, "grad_diff", "m") == {}
    assert results.seed_range(df, "rlcp", "m") == (0.45, 0.95) and results.seed_range(df, "rlcp", "m", "0") is None


def test_draw_bootstrap_resamples_the_draws_first():
    """Closed forms: draws without variation inside (each a constant): the replicates are means of draws resampled
    with replacement, so two draws at 0 and 1 give the interval [0, 1] with the mean 1/2; identical draws give a
    zero-width interval; the mean weighs draws equally whatever their number of facts."""
    assert evaluate.draw_bootstrap([np.zeros((3, 15)), np.ones((3, 15))], 4000, 0) == (0.5, 0.0, 1.0)
    assert evaluate.draw_bootstrap([np.full((2, 5), 0.3)] * 3, 500, 0) == pytest.approx((0.3, 0.3, 0.3))
    mean, lo, hi = evaluate.draw_bootstrap([np.zeros((1, 2)), np.ones((1, 30))], 500, 0)
    assert mean == 0.5
    # draws that agree on average but not fact by fact: wider than no variation, within the range of the facts
    rng = np.random.default_rng(1)
    spread = [rng.integers(0, 2, size=(3, 15)).astype(float) for _ in range(3)]
    mean, lo, hi = evaluate.draw_bootstrap(spread, 2000, 0)
    assert 0 < lo < mean < hi < 1 and mean == pytest.approx(np.mean([v.mean() for v in spread]))
    # a bootstrap within one draw misses how far the draws are apart
    apart = [np.full((3, 15), 0.2) + 0.01 * rng.standard_normal((3, 15)), np.full((3, 15), 0.8) + 0.01 * rng.standard_normal((3, 15))]
    _, lo0, hi0 = evaluate.two_level_bootstrap(apart[0], 2000, 0)
    _, lo2, hi2 = evaluate.draw_bootstrap(apart, 2000, 0)
    assert hi2 - lo2 > 10 * (hi0 - lo0)
    with pytest.raises(ValueError):
        evaluate.draw_bootstrap([], 10, 0)


def test_summarize_draws_gives_the_mean_of_draw_means_with_every_n():
    rows = []
    for draw, cities, acc in [(0, "abc", [1, 1, 1]), (1, "de", [0, 0])]:
        for seed in (0, 1):
            for city, c in zip(cities, acc):
                rows += [{"arm": "rlcp", "seed": seed, "fact_draw": draw, "facts": "targets", "condition": "rag_accuracy.heldout",
                          "city": city, "correct": c, "answer_prob": 0.5}] * 2
    draw_rows = pd.DataFrame([{"metric": "targets.rag_accuracy.heldout", "chance": c} for c in (0.1, 0.3)])
    out = evaluate.summarize_draws(pd.DataFrame(rows), draw_rows, 500, 0)
    r = next(r for r in out if r["metric"] == "targets.rag_accuracy.heldout")
    assert r["value"] == 0.5 and (r["ci_low"], r["ci_high"]) == (0.0, 1.0) and r["chance"] == pytest.approx(0.2)
    assert (r["seed"], r["fact_draw"], r["n_draws"], r["n_seeds"], r["n_units"], r["n_prompts"]) == ("all", "all", 2, 2, 3, 6)
    assert r["interval"] == evaluate.DRAW_INTERVAL
    with pytest.raises(ValueError, match="one fact draw"):
        evaluate.summarize_seeds(pd.DataFrame(rows), draw_rows, 10, 0)


def test_table1_shows_each_fact_draw_and_judges_the_others_on_the_study_draw():
    base = _record()
    draws = results.frame([
        _row("rlcp", "targets.rag_accuracy.heldout", 0.80, 0.6, 0.9, fact_draw=0),
        _row("rlcp", "targets.rag_accuracy.heldout", 0.98, 0.9, 1.0, fact_draw=1),
        _row("rlcp", "targets.rag_accuracy.heldout", 0.89, 0.55, 1.0, fact_draw="all", n_draws=2)], "03")
    record = pd.concat([base[~((base.arm == "rlcp") & (base.metric == "targets.rag_accuracy.heldout"))], draws])
    t1 = claims.table1(record)
    r = t1[(t1.arm == "rlcp") & (t1.metric == "targets.rag_accuracy.heldout")].iloc[0]
    assert (r.value, r.draw_0, r.draw_1, r.n_draws) == (0.89, 0.80, 0.98, 2)
    md = claims.table1_markdown(t1)
    assert "89.0% [55%, 100%]; draws 80% / 98%" in md and "rlcp (2 fact draws × 3 seeds)" in md
    # Table 1's claims read the summary over draws: its interval reaches below 90%
    v = _verdicts(record)
    assert v["RLCP keeps answering from context (RAG), held-out wordings"] == "partly"
    # the other claims compare arms on the study's draw: what the benchmark's methods are trained on
    assert claims_rules.View(record, results.STUDY_DRAW).value("rlcp", "targets.rag_accuracy.heldout") == 0.80
    assert claims_rules.View(record).value("rlcp", "targets.rag_accuracy.heldout") == 0.89
    per_seed = [(0.8, 0.9), (0.4, 0.5)]  # each draw's seeds; the record also has each draw's summary and the one over draws
    spread = claims.draw_spread(results.frame(
        [_row("rlcp", "targets.rag_accuracy.heldout", x, x, x, seed=str(s), n_seeds=1, fact_draw=d)
         for d, xs in enumerate(per_seed) for s, x in enumerate(xs)]
        + [_row("rlcp", "targets.rag_accuracy.heldout", np.mean(xs), min(xs), max(xs), n_seeds=2, fact_draw=d)
           for d, xs in enumerate(per_seed)]
        + [_row("rlcp", "targets.rag_accuracy.heldout", 0.65, 0.4, 0.9, n_seeds=2, fact_draw="all", n_draws=2)], "03"),
        ["targets.rag_accuracy.heldout"])
    row = spread.iloc[0]
    assert row.draw_range == pytest.approx(0.4) and row.seed_sd_within_draw == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert row.n_draws == 2 and row.n_seeds == 2


def test_two_level_interval_covers_seed_variation():
    """Synthetic [seeds, facts] scores with a known seed effect: the interval over seeds and facts is much
    wider than the fact bootstrap of one seed, and its width follows the closed-form standard error."""
    rng = np.random.default_rng(0)
    n_seeds, n_units, sd_seed, sd_unit = 40, 30, 0.10, 0.05
    values = 0.5 + sd_seed * rng.standard_normal((n_seeds, 1)) + sd_unit * rng.standard_normal((n_seeds, n_units))
    mean, lo, hi = evaluate.two_level_bootstrap(values, 4000, 0)
    # seeds and facts crossed: Var(grand mean) ~ Var(seed means) / S + Var(unit means) / U (sample estimates)
    se = np.sqrt(values.mean(axis=1).var(ddof=1) / n_seeds + values.mean(axis=0).var(ddof=1) / n_units)
    assert mean == pytest.approx(values.mean())
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.2)
    # a bootstrap over facts alone (each fact averaged over the seeds) misses the seed variation
    _, lo_f, hi_f = evaluate.bootstrap_ci(values.mean(axis=0), 4000, 0)
    assert hi - lo > 3 * (hi_f - lo_f)
    # seeds that agree: the interval is the fact bootstrap of one seed, not narrower for having copies
    same = np.tile(values[:1], (n_seeds, 1))
    _, lo_same, hi_same = evaluate.two_level_bootstrap(same, 4000, 0)
    _, lo1, hi1 = evaluate.bootstrap_ci(values[0], 4000, 0)
    assert (hi_same - lo_same) == pytest.approx(hi1 - lo1, rel=0.15)
    with pytest.raises(ValueError):
        evaluate.two_level_bootstrap(np.zeros(3), 10, 0)


def test_summarize_seeds_averages_facts_within_seeds_then_seeds():
    rows = []
    for seed, acc in [(0, [1, 1, 0]), (1, [0, 0, 0])]:
        for city, c in zip("abc", acc):
            rows += [{"arm": "rlcp", "seed": seed, "facts": "targets", "condition": "no_context_recall.train", "city": city,
                      "correct": c, "answer_prob": 0.5}] * 2
    seed_rows = pd.DataFrame([{"metric": "targets.no_context_recall.train", "chance": 0.1},
                              {"metric": "targets.no_context_recall.train", "chance": 0.3}])
    out = evaluate.summarize_seeds(pd.DataFrame(rows), seed_rows, 500, 0)
    recall = next(r for r in out if r["metric"] == "targets.no_context_recall.train")
    assert recall["value"] == pytest.approx(1 / 3) and recall["chance"] == pytest.approx(0.2)
    assert recall["n_seeds"] == 2 and recall["n_units"] == 3 and recall["n_prompts"] == 6 and recall["seed"] == "all"
    assert recall["ci_low"] <= 1 / 3 <= recall["ci_high"]
    assert any(r["metric"] == "targets.no_context_recall_answer_prob.train" for r in out)


def _record(changes=None):
    base = {("original", "targets.no_context_recall.train"): (0.96, 0.93, 0.99),
            ("rlcp", "targets.no_context_recall.train"): (0.0, 0.0, 0.0),
            ("rlcp", "targets.no_context_recall.heldout"): (0.0, 0.0, 0.0),
            ("original", "targets.rag_accuracy.heldout"): (0.87, 0.78, 0.93),
            ("rlcp", "targets.rag_accuracy.heldout"): (0.80, 0.60, 0.90),
            ("rlcp", "targets.rag_accuracy.train"): (1.0, 1.0, 1.0),
            ("just_rag", "targets.adversary_probe_accuracy.train"): (1.0, 1.0, 1.0),
            ("rlcp", "targets.adversary_probe_accuracy.train"): (0.11, 0.02, 0.24),
            ("rlcp", "targets.adversary_probe_accuracy.heldout"): (0.12, 0.03, 0.25),
            ("original", "retain.no_context_recall.train"): (0.95, 0.92, 0.97),
            ("rlcp", "retain.no_context_recall.train"): (0.0, 0.0, 0.0)}
    base.update(changes or {})
    rows = [_row(arm, key, *v, n_seeds=0 if arm == "original" else 3,
                 chance=1 / 15 if "adversary" in key else 0.0) for (arm, key), v in base.items()]
    return results.frame(rows, "test")


def _verdicts(record):
    return claims.judge(record).set_index("claim").verdict


def test_claim_rules_read_the_interval():
    v = _verdicts(_record())
    assert v["RLCP: no-context recall of the target facts < 7%"] == "reproduced"
    assert v["RLCP keeps answering from context (RAG), held-out wordings"] == "partly"  # straddles 90%
    assert v["Just-RAG's probe still reads the facts"] == "reproduced"
    assert v["RLCP's adversary probe at chance, held-out wordings"] == "reproduced"
    assert v["Forgetting is targeted: retain facts keep their recall"] == "not reproduced"
    assert v["Facts linearly undecodable at l*: fresh fact probe, held-out templates"] == "not measured"
    # the same mean with an interval that reaches above 7%: no longer reproduced across seeds
    v = _verdicts(_record({("rlcp", "targets.no_context_recall.heldout"): (0.05, 0.0, 0.2)}))
    assert v["RLCP: no-context recall of the target facts < 7%"] == "partly"
    v = _verdicts(_record({("rlcp", "targets.rag_accuracy.heldout"): (0.95, 0.91, 0.99),
                             ("rlcp", "retain.no_context_recall.train"): (0.9, 0.85, 0.95),
                             ("rlcp", "targets.adversary_probe_accuracy.train"): (0.5, 0.4, 0.6),
                             ("rlcp", "targets.adversary_probe_accuracy.heldout"): (0.5, 0.4, 0.6)}))
    assert v["RLCP keeps answering from context (RAG), held-out wordings"] == "reproduced"
    assert v["Forgetting is targeted: retain facts keep their recall"] == "reproduced"
    assert v["RLCP's adversary probe at chance, held-out wordings"] == "not reproduced"


def test_table1_shows_the_seed_range_and_every_claim_has_a_rule():
    record = pd.concat([_record(), results.frame([
        _row("rlcp", "targets.rag_accuracy.heldout", 0.6, 0.5, 0.7, seed="0", n_seeds=1),
        _row("rlcp", "targets.rag_accuracy.heldout", 0.9, 0.8, 1.0, seed="1", n_seeds=1)], "03")])
    t1 = claims.table1(record)
    row = t1[(t1.arm == "rlcp") & (t1.metric == "targets.rag_accuracy.heldout")].iloc[0]
    assert (row.seed_min, row.seed_max, row.value) == (0.6, 0.9, 0.8)
    md = claims.table1_markdown(t1)
    assert "rlcp (3 seeds)" in md and "seeds 60%–90%" in md
    assert all(c.rule for c in claims.CLAIMS) and len({c.claim for c in claims.CLAIMS}) == len(claims.CLAIMS)


# Every claim's rule on one hand-made record: the numbers of the committed single-seed default run before
# seeds existed (outputs/default of commit 25e099b, README), so each verdict can be checked by hand.
FULL = {
    ("original", "targets.no_context_recall.train"): (0.962, 0.93, 0.99),
    ("rlcp", "targets.no_context_recall.train"): (0.0, 0.0, 0.0),
    ("rlcp", "targets.no_context_recall.heldout"): (0.0, 0.0, 0.0),
    ("original", "targets.rag_accuracy.heldout"): (0.867, 0.78, 0.93),
    ("rlcp", "targets.rag_accuracy.heldout"): (0.644, 0.58, 0.71),
    ("rlcp", "targets.rag_accuracy.train"): (1.0, 1.0, 1.0),
    ("just_rag", ADV_KEY := "targets.adversary_probe_accuracy.train"): (1.0, 1.0, 1.0),
    ("rlcp", ADV_KEY): (0.114, 0.02, 0.24),
    ("rlcp", "targets.adversary_probe_accuracy.heldout"): (0.23, 0.10, 0.38),  # issue 27's held-out figure
    ("original", "retain.no_context_recall.train"): (0.948, 0.92, 0.97),
    ("rlcp", "retain.no_context_recall.train"): (0.0, 0.0, 0.0),
    ("original", "heldout_probe_accuracy.fact.linear.last"): (1.0, 1.0, 1.0),
    ("rlcp", "heldout_probe_accuracy.fact.linear.last"): (0.526, 0.48, 0.57),
    ("original", "heldout_probe_accuracy.country_target.linear.last"): (0.942, 0.85, 0.99),
    ("rlcp", "heldout_probe_accuracy.country_target.linear.last"): (0.451, 0.30, 0.60),
    ("original", "heldout_probe_accuracy.country_target.linear.city"): (0.804, 0.64, 0.93),
    ("rlcp", "heldout_probe_accuracy.country_target.linear.city"): (0.769, 0.61, 0.90),
    ("original", "collapse.question.type_probe_heldout_entities"): (0.987, 0.97, 1.0),
    ("rlcp", "collapse.question.type_probe_heldout_entities"): (0.993, 0.98, 1.0),
    ("original", "collapse.entity.type_probe_heldout_entities"): (1.0, 1.0, 1.0),
    ("rlcp", "collapse.entity.type_probe_heldout_entities"): (1.0, 1.0, 1.0),
    ("original", "collapse.question.within_to_between"): (0.91, 0.88, 0.93),
    ("rlcp", "collapse.question.within_to_between"): (0.69, 0.64, 0.74),
    ("rlcp", "collapse.question.identity_nn.city_target"): (0.79, 0.70, 0.88),
    ("original", "collapse.entity.within_to_between"): (0.63, 0.61, 0.65),
    ("rlcp", "collapse.entity.within_to_between"): (0.61, 0.59, 0.64),
    ("rlcp", "collapse.entity.identity_nn.city_target"): (1.0, 1.0, 1.0),
    ("just_rag", "attention.entropy_context.target"): (1.46, 1.37, 1.56),
    ("rlcp", "attention.entropy_context.target"): (1.13, 1.03, 1.25),
    ("just_rag", "attention.evidence_weight.target"): (0.06, 0.05, 0.07),
    ("rlcp", "attention.evidence_weight.target"): (0.15, 0.13, 0.16),
    ("original", "gsm8k.step_headers"): (0.0, 0.0, 0.0),
    ("rlcp", "gsm8k.step_headers"): (0.0, 0.0, 0.0),
    ("rlcp", "gsm8k.step_headers.minus_original"): (0.0, 0.0, 0.0),
    ("just_rag", "gsm8k.step_headers.minus_original"): (0.0, 0.0, 0.0),
    ("original", "gsm8k.n_tokens"): (197.5, 184.7, 209.9),
    ("rlcp", "gsm8k.n_tokens"): (246.9, 240.8, 252.0),
    ("rlcp", "gsm8k.n_tokens.minus_original"): (49.4, 36.0, 63.0),
    ("original", "gsm8k.correct"): (0.0, 0.0, 0.0),
    ("rlcp", "gsm8k.correct"): (0.02, 0.0, 0.05),
    ("rlcp", "gsm8k.correct.minus_original"): (0.02, 0.0, 0.05),
    # the unlearning benchmark (08): made up, one rule boundary each
    ("original", "targets.no_context_recall.heldout"): (0.95, 0.9, 1.0),
    ("selective_rlcp", "targets.no_context_recall.heldout"): (0.05, 0.0, 0.12),
    ("original", "retain_heldout.no_context_recall.heldout"): (0.9, 0.8, 0.97),
    ("selective_rlcp", "retain_heldout.no_context_recall.heldout"): (0.85, 0.82, 0.9),
    ("selective_rlcp", "targets.rag_accuracy.heldout"): (0.8, 0.7, 0.9),
    ("original", "fluency.names_a_country.targets"): (1.0, 1.0, 1.0),
    ("selective_rlcp", "fluency.names_a_country.targets"): (0.95, 0.9, 1.0),
    ("rlcp", "retain_heldout.no_context_recall.heldout"): (0.0, 0.0, 0.0),
    ("grad_diff", "targets.no_context_recall.heldout"): (0.0, 0.0, 0.0),
    ("grad_diff", "retain_heldout.no_context_recall.heldout"): (0.3, 0.2, 0.4),
    ("npo", "targets.no_context_recall.heldout"): (0.5, 0.3, 0.7),
    # 09's quantization attack: made up (RLCP's targets back after the Q4_1 round trip)
    ("original", "quant.Q4_1.targets.no_context_recall.heldout"): (0.9, 0.8, 1.0),
    ("rlcp", "quant.Q4_1.targets.no_context_recall.heldout"): (0.6, 0.4, 0.8),
    # the open questions (09): made up
    ("rlcp_kl0", "kl_sweep.gsm8k.n_tokens"): (150.0, 130.0, 170.0),
    ("rlcp", "kl_sweep.gsm8k.n_tokens"): (240.0, 230.0, 250.0),
    ("rlcp_kl0", "kl_sweep.gsm8k.repeats_itself"): (0.45, 0.3, 0.6),
    ("rlcp", "kl_sweep.gsm8k.repeats_itself"): (0.5, 0.35, 0.65),
    **{(arm, f"gradients.cosine.{pair}.{when}"): (v, np.nan, np.nan) for arm, when in [("original", "start"), ("rlcp_gradients", "end")]
       for pair, v in [("fact_vs_logic", 0.02), ("fact_vs_other_half_of_the_targets", 0.3), ("fact_vs_other_facts", -0.1)]},
    ("original", "gradients.first_order.logic.worst_ratio"): (1.3, np.nan, np.nan),
    ("original", "gradients.first_order.logic.smallest_eta_ratio"): (0.8, np.nan, np.nan),
    ("rlcp_5facts", "targets.no_context_recall.heldout"): (0.0, 0.0, 0.0),
    ("rlcp_30facts", "targets.no_context_recall.heldout"): (0.02, 0.0, 0.05),
    ("rlcp_5facts", "targets.rag_accuracy.heldout"): (0.95, 0.9, 1.0),
    ("rlcp_30facts", "targets.rag_accuracy.heldout"): (0.92, 0.87, 0.97),
    ("arith_rlcp", "targets.no_context_recall.heldout"): (0.0, 0.0, 0.0),
    ("arith_original", "two_step.targeted.answer_right"): (0.4, 0.2, 0.6),
    ("arith_rlcp", "two_step.targeted.answer_right"): (0.1, 0.0, 0.15),
    ("arith_original", "two_step.targeted.step_right"): (0.6, 0.4, 0.8),
    ("arith_rlcp", "two_step.targeted.step_right"): (0.1, 0.0, 0.15),
}
CHANCE = {"targets.adversary_probe_accuracy": 1 / 15, "heldout_probe_accuracy": 1 / 15,
          "type_probe": 1 / 3, "identity_nn": 1 / 60, "gsm8k.correct": 0.06}
EXPECTED = {  # claim -> verdict, each worked out by hand from FULL and the claim's rule
    "RLCP: no-context recall of the target facts < 7%": "reproduced",  # both intervals [0, 0] < 7%
    "RLCP keeps answering from context (RAG), held-out wordings": "partly",  # [58, 71] < 90, training 100%
    "Just-RAG's probe still reads the facts": "reproduced",  # [100, 100] >= 75%
    "RLCP's adversary probe at chance, held-out wordings": "partly",  # 6.7% below held-out [10, 38], inside training's [2, 24]
    "Forgetting is targeted: retain facts keep their recall": "not reproduced",  # [0, 0] < 40% of 94.8%
    "Facts linearly undecodable at l*: fresh fact probe, held-out templates": "not reproduced",  # 57% > 50%
    "The targets' country undecodable at l*: country probe from other cities, last token": "not reproduced",  # 60 > 47
    "… and at the city token (where the entity is looked up)": "not reproduced",
    "Cities and fruits intermixed at l*, question context (type probe on held-out entities)": "not reproduced",
    "Cities and fruits intermixed at l*, entity context (type probe on held-out entities)": "not reproduced",
    "Entities collapse to type centroids, question context: within-type ÷ between-centroid distance": "partly",
    "Entities collapse to type centroids, entity context: within-type ÷ between-centroid distance": "not reproduced",
    "Attention at l* sharpens: entropy over the context (nats)": "reproduced",  # [1.03, 1.25] below [1.37, 1.56]
    "Attention on the evidence token at l*": "partly",  # 0.15 < 0.5, but above Just-RAG's interval
    "RLCP writes 'Step 1 / Step 2' scaffolding": "not reproduced",
    "Replies get longer (the paper's alternative explanation: KL verbosity)": "reproduced",
    "Reasoning kept or improved: GSM8K accuracy": "inconclusive",  # the original is at the floor
    "Selective RLCP forgets the targets (no-context recall ≤ 10%, held-out wordings)": "partly",  # [0, 12]: mean only
    "Selective RLCP keeps the held-out retain facts (≥ 90% of the original's recall)": "met",  # 82% >= 0.9 x 90%
    "Selective RLCP answers from context on held-out wordings (RAG ≥ 90%)": "not met",  # mean 80% < 90% (RAG_KEPT)
    "Selective RLCP's no-context answers about the targets still name a country (≥ 90%)": "met",  # [90, 100]
    "RLCP's forgetting survives the offline model's own 4-bit format: no-context recall of the targets read back "
    "through Q4_1 ≤ 10% (held-out wordings)": "not met",  # [40, 80] above 10%
    # GradDiff forgets too and keeps more held-out retain facts ([20, 40] above RLCP's [0, 0]); NPO does not forget
    "RLCP's adversary buys something over GradDiff, NPO and RMU (less collateral or harder to relearn, among methods "
    "that forget)": "not met",
    "Limitation 3: without the KL term (λ_KL = 0) GSM8K replies are shorter": "reproduced",  # [130, 170] < [230, 250]
    "Limitation 3: … and loop less": "partly",  # lower mean, overlapping intervals
    # 0.02 below |0.3| and |-0.1| at both ends
    "Assumption 3.1: fact and reasoning gradients nearly orthogonal (δ, the absolute cosine of ∇L_fact and ∇L_logic, small)": "reproduced",
    # 1.3 > 1.1 at some η, 0.8 at the smallest
    "Proposition 3.2: a step along ∇L_fact moves the reasoning loss by at most η·δ·‖∇L_fact‖·‖∇L_logic‖ + O(η²)": "partly",
    # RLCP's 15-fact row (RAG [58, 71]) misses 90% (so does 30 facts: [87, 97]), every count forgets
    "Limitation 2: RLCP forgets more facts and still answers from context": "partly",
    # forgotten, the original above chance, RLCP's [0, 15] entirely below [20, 60]
    "Limitation 1: reasoning survives forgetting its own facts (the addition step of two-step problems on forgotten "
    "multiplication facts)": "not reproduced",
}


def _full_record(changes=None):
    values = {**FULL, **(changes or {})}
    rows = []
    for (arm, key), v in values.items():
        chance = next((c for prefix, c in CHANCE.items() if prefix in key), None)
        rows.append(_row(arm, key, *v, n_seeds=0 if arm == "original" else 3, chance=chance))
    return results.frame(rows, "test")


def test_every_claim_rule_on_a_hand_made_record():
    verdicts = _verdicts(_full_record())
    assert set(verdicts.index) == {c.claim for c in claims.CLAIMS} == set(EXPECTED)
    for claim, expected in EXPECTED.items():
        assert verdicts[claim] == expected, claim
    # moving one number across a rule's threshold moves only that claim's verdict
    flipped = _verdicts(_full_record({("rlcp", "retain.no_context_recall.train"): (0.9, 0.8, 0.97),
                                      ("rlcp", "heldout_probe_accuracy.fact.linear.last"): (0.07, 0.03, 0.12),
                                      ("original", "gsm8k.correct"): (0.3, 0.2, 0.4)}))
    assert flipped["Forgetting is targeted: retain facts keep their recall"] == "reproduced"
    assert flipped["Facts linearly undecodable at l*: fresh fact probe, held-out templates"] == "reproduced"
    assert flipped["Reasoning kept or improved: GSM8K accuracy"] == "reproduced"  # its interval reaches 0
    changed = [c for c in EXPECTED if flipped[c] != verdicts[c]]
    assert len(changed) == 3


def test_adversary_claim_compares_rlcp_with_the_field_methods_that_forget():
    claim = ("RLCP's adversary buys something over GradDiff, NPO and RMU (less collateral or harder to relearn, among "
             "methods that forget)")
    keeps_more = _verdicts(_full_record({("rlcp", "retain_heldout.no_context_recall.heldout"): (0.6, 0.5, 0.7)}))
    assert keeps_more[claim] == "met"  # GradDiff's [20, 40] lies below RLCP's [50, 70]; NPO does not forget
    overlap = _verdicts(_full_record({("rlcp", "retain_heldout.no_context_recall.heldout"): (0.35, 0.25, 0.45)}))
    assert overlap[claim] == "partly"
    # same collateral as GradDiff, but the knowledge comes back more easily after RLCP: worse, not 'partly'
    relearns = {("rlcp", "retain_heldout.no_context_recall.heldout"): (0.3, 0.2, 0.4),
                ("rlcp", "relearn.recovery"): (0.8, 0.65, 0.9), ("grad_diff", "relearn.recovery"): (0.15, 0.0, 0.3)}
    assert _verdicts(_full_record(relearns))[claim] == "not met"
    harder = {**relearns, ("rlcp", "relearn.recovery"): (0.05, 0.0, 0.1), ("grad_diff", "relearn.recovery"): (0.5, 0.3, 0.7)}
    assert _verdicts(_full_record(harder))[claim] == "met"
    nobody = _verdicts(_full_record({("grad_diff", "targets.no_context_recall.heldout"): (0.5, 0.4, 0.6)}))
    assert nobody[claim] == "inconclusive"


def test_open_question_claims_find_their_settings_and_stay_inconclusive_without_forgetting():
    v = claims.View(_full_record())
    assert claims.most_facts(v) == "rlcp_30facts"
    limitation_1 = ("Limitation 1: reasoning survives forgetting its own facts (the addition step of two-step problems on "
                    "forgotten multiplication facts)")
    verdicts = _verdicts(_full_record({("arith_rlcp", "targets.no_context_recall.heldout"): (0.5, 0.3, 0.7)}))
    assert verdicts[limitation_1] == "inconclusive"
    # the facts are gone (answers wrong) but the addition on the stated product is done as often as before
    fine = _verdicts(_full_record({("arith_rlcp", "two_step.targeted.step_right"): (0.55, 0.4, 0.7)}))
    assert fine[limitation_1] == "reproduced"
    proposition = "Proposition 3.2: a step along ∇L_fact moves the reasoning loss by at most η·δ·‖∇L_fact‖·‖∇L_logic‖ + O(η²)"
    within = _verdicts(_full_record({("original", "gradients.first_order.logic.worst_ratio"): (1.05, np.nan, np.nan)}))
    assert within[proposition] == "reproduced"  # 5% above the first-order bound: inside the O(η²) allowance
    no_counts = _full_record()
    no_counts = no_counts[~no_counts.arm.str.endswith("facts")]
    assert _verdicts(no_counts)["Limitation 2: RLCP forgets more facts and still answers from context"] == "not measured"
