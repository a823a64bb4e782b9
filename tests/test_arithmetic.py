"""The arithmetic task's facts, prompts and scoring on hand-made strings."""

from rlcp_utils.data import facts
from rlcp_utils.measures import arithmetic


def test_multiplication_facts_are_unordered_pairs_cast_as_study_facts():
    products = arithmetic.multiplication_facts(2, 9)
    assert len(products) == 8 * 9 // 2 and all(f["a"] <= f["b"] and f["answer"] == f["a"] * f["b"] for f in products)
    seven_eight = next(f for f in products if (f["a"], f["b"]) == (7, 8))
    assert seven_eight["city"] == "7 x 8" and seven_eight["country"] == "56"


def test_templates_render_the_fact_and_hold_out_the_last_wordings():
    questions, evidences = arithmetic.templates()
    assert [q.split for q in questions].count("heldout") == arithmetic.N_HELDOUT_QUESTIONS
    assert [e.split for e in evidences][-1] == "heldout"
    assert facts.question(questions[0], "7 x 8") == "7 x 8 ="
    assert facts.evidence(evidences[0], "7 x 8", "56") == "7 x 8 = 56."


def test_scoring_reads_the_first_number():
    assert arithmetic.first_number(" 56") == 56 and arithmetic.first_number("It is 1,024.") == 1024
    assert arithmetic.first_number("no idea") is None and arithmetic.first_number(" -3 apples") == -3


def test_two_step_problems_need_the_fact_and_score_both_steps():
    fact = arithmetic.multiplication_facts(7, 8)[1]  # 7 x 8
    p = arithmetic.two_step(fact, 5)
    assert p["answer"] == 61 and p["product"] == 56 and p["question"].endswith("First, 7 x 8 =")
    assert arithmetic.score_two_step(" 56, then 56 + 5 = 61.\nSo", p) == {"product_right": True, "answer_right": True, "step_right": True}
    # a wrong product with the addition done right: the fact is gone, the step is not
    assert arithmetic.score_two_step(" 54, then 54 + 5 = 59.", p) == {"product_right": False, "answer_right": False, "step_right": True}
    assert arithmetic.score_two_step(" 56, then 56 + 5 = 60.\n61", p) == {"product_right": True, "answer_right": False, "step_right": False}
    assert arithmetic.score_two_step(" 61", p) == {"product_right": False, "answer_right": True, "step_right": False}
    assert arithmetic.score_two_step(" no", p) == {"product_right": False, "answer_right": False, "step_right": False}
    problems = arithmetic.two_step_problems([fact], 3, seed=0)
    assert len(problems) == 3 and len({q["addend"] for q in problems}) == 3
    assert problems == arithmetic.two_step_problems([fact], 3, seed=0)
