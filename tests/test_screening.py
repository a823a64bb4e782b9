import numpy as np
import pytest

from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate, screening


@pytest.mark.parametrize("margins, expected", [
    ([1, 1, 1, 1, 1, 1, -1], "known"),          # 6 firm recalls of 7 reach 0.8
    ([1, 1, 1, 1, 1, 0.1, -1], "borderline"),   # 5 firm recalls: the infirm one decides
    ([1, 1, 1, 1, 1, -0.1, -1], "borderline"),  # the same, on the other side of zero
    ([1, 1, 1, 1, 1, -1, -1], "unknown"),       # 5 of 7 whatever happens
    ([1, 1, 1, 1, 0.2, 0.2, 0.2], "borderline"),
    ([0.2, 0.2, -1, -1, -1, -1, -1], "unknown"),  # even if both infirm decisions were recalls: 2 of 7
    ([0.2, 0.2, -0.2, -0.2, -0.2, -0.2, -0.2], "borderline"),  # all 7 infirm: anything can happen
])
def test_status_counts_only_firm_decisions(margins, expected):
    assert screening.status(np.array(margins), 0.8, 0.25) == expected


def test_without_a_margin_the_rule_is_recall_against_the_threshold():
    rng = np.random.default_rng(0)
    for _ in range(200):
        margins = rng.normal(size=int(rng.integers(1, 12)))
        threshold = float(rng.uniform())
        old = "known" if (margins > 0).mean() >= threshold - 1e-12 else "unknown"
        assert screening.status(margins, threshold, 0.0) == old


def test_templates_needed_is_the_ceiling():
    assert [screening.templates_needed(7, t) for t in (0.5, 0.8, 6 / 7, 1.0)] == [4, 6, 6, 7]


def test_screening_reads_the_margins_of_score_answers(tiny_model, tiny_tokenizer):
    pool = [{"city": c, "country": k} for c, k in [("Berlin", "Germany"), ("Paris", "France"), ("Lima", "Peru")]]
    qs = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")[:4]
    rows = screening.screen(tiny_model, tiny_tokenizer, pool, qs, "chat", 4, 0.5, 0.25)
    items = facts.build_items(tiny_tokenizer, pool, qs, "chat")
    s = evaluate.score_answers(tiny_model, [i["prompt_ids"] for i in items], [i["answer_ids"] for i in items], 4,
                               tiny_tokenizer.pad_token_id)
    assert (s["greedy_correct"] == (s["greedy_margin"] > 0)).all()
    for k, row in enumerate(rows):
        margins = s["greedy_margin"][k * len(qs):(k + 1) * len(qs)]
        assert row["recall_train"] == (margins > 0).mean()
        assert row["min_abs_margin"] == pytest.approx(np.abs(margins).min())
        assert row["status"] == screening.status(margins, 0.5, 0.25)


def test_left_padding_scores_like_right_padding(tiny_model, tiny_tokenizer):
    pool = [{"city": c, "country": k} for c, k in [("Berlin", "Germany"), ("Nairobi", "Kenya")]]
    items = facts.build_items(tiny_tokenizer, pool, facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q"), "chat")
    args = ([i["prompt_ids"] for i in items], [i["answer_ids"] for i in items], 5, tiny_tokenizer.pad_token_id)
    right = evaluate.score_answers(tiny_model, *args)
    left = evaluate.score_answers(tiny_model, *args, padding="left")
    np.testing.assert_allclose(left["answer_logprob"], right["answer_logprob"], atol=1e-4)
    np.testing.assert_allclose(left["greedy_margin"], right["greedy_margin"], atol=1e-4)


@pytest.mark.smoke
def test_the_smoke_screening_is_the_same_in_any_precision_batch_size_and_padding():
    """The offline model on the smoke profile's pool (study.screening_check): every candidate's status, and so each
    draw's facts, with the model set to fp32 or bf16, batches of 64 or 16, right or left padding; one candidate at a
    time (batch 1, on a fifth of the pool: make test's time budget) gives the same margins, bit for bit. The
    selection is the committed smoke fact set."""
    from rlcp_utils.core.config import load_profile
    from rlcp_utils.study import screening_check

    result = screening_check.compare(load_profile("smoke"))
    first = result["runs"][0]["statuses"]
    assert first["known"] and first["unknown"]
    assert [r["candidates"] for r in result["runs"]] == [result["candidates"], result["candidates"], len(range(0, result["candidates"], 5))]
    assert screening_check.identical(result), result["runs"]


def test_the_screening_check_reports_any_difference():
    """study.screening_check.identical: a status, a margin or a committed fact that differs makes it False."""
    from rlcp_utils.study import screening_check

    agreeing = {"pool": "targets", "committed": 3, "selected_here": 3, "shared": 3, "same_order": True}
    same = {"runs": [{"padding": "right", "agreement_with_committed": [agreeing]},
                     {"padding": "right", "status_differs": [], "max_margin_difference": 0.0, "agreement_with_committed": [agreeing]}]}
    assert screening_check.identical(same)
    assert screening_check.identical({"runs": [same["runs"][0], {**same["runs"][1], "padding": "left", "max_margin_difference": 1e-5}]})
    for change in [{"status_differs": ["Isfahan: known -> borderline"]}, {"max_margin_difference": 1e-7},
                   {"agreement_with_committed": [{**agreeing, "shared": 2}]},
                   {"agreement_with_committed": [{**agreeing, "same_order": False}]}]:
        assert not screening_check.identical({"runs": [same["runs"][0], {**same["runs"][1], **change}]}), change
