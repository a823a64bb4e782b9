"""The recompute recipes on hand-made per-prompt rows whose summaries are worked out by hand."""

import pandas as pd
import pytest

from rlcp_utils.core import results
from rlcp_utils.study import recompute


def _items(rows):
    return pd.DataFrame([{"arm": "rlcp", "facts": "targets", "condition": "no_context_recall.heldout", "answer_prob": 0.5,
                          **r} for r in rows])


def test_a_fact_counts_once_whatever_its_number_of_prompts():
    # seed 0: fact a 1/1, fact b 1/3 -> (1 + 1/3) / 2 = 2/3 (the prompt mean would be 2/4); seed 1: a 0, b 1 -> 1/2
    rows = [{"seed": 0, "city": "a", "correct": 1}] + [{"seed": 0, "city": "b", "correct": c} for c in (1, 0, 0)]
    rows += [{"seed": 1, "city": "a", "correct": 0}, {"seed": 1, "city": "b", "correct": 1}]
    got = {(r["seed"], r["metric"]): r["recomputed"] for s in ("0", "1", "all")
           for r in recompute._prompt_scores(_items(rows), "rlcp", s, "0")}
    assert got[("0", "targets.no_context_recall.heldout")] == pytest.approx(2 / 3)
    assert got[("1", "targets.no_context_recall.heldout")] == pytest.approx(1 / 2)
    assert got[("all", "targets.no_context_recall.heldout")] == pytest.approx(7 / 12)
    assert got[("all", "targets.no_context_recall_answer_prob.heldout")] == pytest.approx(0.5)


def test_over_draws_each_draw_weighs_the_same_and_old_files_are_draw_0():
    # draw 0 (no fact_draw column in its file): 1 fact right of 1; draw 1: 0 of 3 facts right -> (1 + 0) / 2
    old = _items([{"seed": 0, "city": "a", "correct": 1}])
    new = _items([{"seed": 0, "city": c, "correct": 0, "fact_draw": 1} for c in "xyz"])
    got = recompute._prompt_scores(pd.concat([old, new], ignore_index=True), "rlcp", "all", "all")
    assert next(r for r in got if r["metric"] == "targets.no_context_recall.heldout")["recomputed"] == pytest.approx(0.5)


def test_recompute_pairs_rows_and_reports_a_difference(tmp_path):
    out = tmp_path / "default"
    job = out / "jobs" / "rlcp" / "seed0"
    job.mkdir(parents=True)
    _items([{"seed": 0, "city": "a", "correct": 1}, {"seed": 0, "city": "b", "correct": 0}]).to_csv(job / "per_item.csv", index=False)
    (out / "results").mkdir()

    def record(value):
        row = {"arm": "rlcp", "seed": "0", "fact_draw": "0", "metric": "targets.no_context_recall.heldout", "value": value,
               "ci_low": 0.0, "ci_high": 1.0, "chance": 0.0, "unit": "facts", "n_units": 2, "n_prompts": 2, "n_seeds": 1,
               "interval": "x"}
        results.frame([row], "03_rlcp_training").to_csv(out / "results" / "03_rlcp_training.csv", index=False)

    record(0.5)
    t = recompute.recompute(out, "03_rlcp_training")
    assert len(t) == 1 and t.abs_diff.iloc[0] == 0
    record(0.6)
    assert recompute.recompute(out, "03_rlcp_training").abs_diff.iloc[0] == pytest.approx(0.1)


def test_subsets_are_the_odd_retain_positions_and_the_first_targets(tmp_path):
    import json

    out = tmp_path / "default"
    (out / "data").mkdir(parents=True)
    (out / "data" / "retain.jsonl").write_text("".join(json.dumps({"city": c}) + "\n" for c in "pqrs"))  # q, s held out
    (out / "data" / "targets.jsonl").write_text("".join(json.dumps({"city": c}) + "\n" for c in "abc"))
    (out / "params.resolved.yaml").write_text("fact_counts: [2, 8]\n")  # shared: the first min(5, 3, 2) = 2 targets
    job = out / "jobs" / "rlcp_2facts" / "seed0"
    job.mkdir(parents=True)
    rows = [{"seed": 0, "facts": "retain", "city": c, "correct": ok} for c, ok in zip("pqrs", (1, 0, 1, 1))]
    rows += [{"seed": 0, "facts": "targets", "city": c, "correct": ok} for c, ok in zip("abc", (1, 0, 0))]
    _items(rows).to_csv(job / "per_item.csv", index=False)
    got = {r.metric: r.recomputed for r in recompute.subset_scores(out, pd.DataFrame(
        [{"arm": "rlcp_2facts", "seed": "0", "fact_draw": "0", "metric": m} for m in
         ["retain_heldout.no_context_recall.heldout", "shared_targets.no_context_recall.heldout"]])).itertuples()}
    assert got["retain_heldout.no_context_recall.heldout"] == pytest.approx(0.5)  # q 0, s 1
    assert got["retain_train.no_context_recall.heldout"] == pytest.approx(1.0)  # p 1, r 1
    assert got["shared_targets.no_context_recall.heldout"] == pytest.approx(0.5)  # a 1, b 0 (c is not shared)


def _current_default_notebooks():
    from rlcp_utils.core.config import REPO_ROOT, load_profile
    from rlcp_utils.study import staleness

    stale = staleness.stale_outputs(load_profile("default"))
    out = REPO_ROOT / "outputs" / "default"
    return [nb for nb in recompute.RECIPES if nb not in stale and (out / "results" / f"{nb}.csv").exists()]


@pytest.mark.parametrize("notebook", _current_default_notebooks())
def test_the_committed_default_rows_recompute_from_their_committed_per_prompt_rows(notebook):
    """Every notebook of outputs/default that is current against this checkout (make check): its recorded rows are
    what the committed per-prompt rows give (a stale notebook is left to the regeneration)."""
    from rlcp_utils.core.config import REPO_ROOT

    t = recompute.recompute(REPO_ROOT / "outputs" / "default", notebook)
    assert len(t), f"{notebook}: no record row recomputed"
    bad = t[t.abs_diff > 1e-9]
    assert bad.empty, f"{notebook}: rows differ from their per-prompt rows:\n{bad.head().to_string()}"
