"""The arithmetic task's facts, prompts and scoring on hand-made strings."""

import pytest

from rlcp_utils import arithmetic


def test_multiplication_facts_are_unordered_pairs():
    facts = arithmetic.multiplication_facts(2, 9)
    assert len(facts) == 8 * 9 // 2 and all(f["a"] <= f["b"] and f["answer"] == f["a"] * f["b"] for f in facts)


def test_additions_are_distinct_and_seeded():
    a, b = arithmetic.addition_facts(20, 0), arithmetic.addition_facts(20, 0)
    assert a == b and len({(f["a"], f["b"]) for f in a}) == 20
    assert all(10 <= f["a"] <= 99 and f["answer"] == f["a"] + f["b"] for f in a)
    assert a != arithmetic.addition_facts(20, 1)


def test_scoring_reads_the_first_number():
    assert arithmetic.first_number(" 56") == 56 and arithmetic.first_number("It is 1,024.") == 1024
    assert arithmetic.first_number("no idea") is None and arithmetic.first_number(" -3 apples") == -3
    assert arithmetic.is_correct(" 56, because 7 times 8 is 56", 56)
    assert not arithmetic.is_correct(" 54? No, 56", 56)  # the first number counts, not a later correction
    assert not arithmetic.is_correct("", 56)


def test_prompts_and_two_step_problems():
    fact = {"a": 7, "b": 8, "op": "x", "answer": 56}
    assert arithmetic.question(fact) == "Q: What is 7 times 8?\nA:"
    p = arithmetic.two_step(fact, 5)
    assert p["answer"] == 61 and "7 times 8, plus 5" in p["question"]
    with pytest.raises(ValueError):
        arithmetic.two_step({"a": 1, "b": 2, "op": "+", "answer": 3}, 5)


def test_chance_level_is_the_most_common_answer():
    facts = [{"answer": 12}, {"answer": 12}, {"answer": 6}, {"answer": 8}]
    assert arithmetic.chance_level(facts) == 0.5
