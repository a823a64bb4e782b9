"""Arithmetic facts inside the reasoning domain (the open-questions issue, part 4: the paper's limitation 1).

Single-digit multiplication facts ("7 x 8 = 56") and two-digit additions, asked in a fixed prompt, scored from
the model's greedy continuation; two-step problems that need one multiplication fact ("(7 x 8) + 5") test
whether forgetting a fact hurts the reasoning that uses it. Which task the model does well above chance is a
measurement (the notebook), not an assumption made here.
"""

from __future__ import annotations

import random
import re

_INT = re.compile(r"-?\d[\d,]*")


def multiplication_facts(lo: int = 2, hi: int = 9) -> list[dict]:
    """Every a x b with lo <= a <= b <= hi (a x b and b x a are one fact)."""
    return [{"a": a, "b": b, "op": "x", "answer": a * b} for a in range(lo, hi + 1) for b in range(a, hi + 1)]


def addition_facts(n: int, seed: int) -> list[dict]:
    """n distinct two-digit additions a + b (10 <= a, b <= 99), seeded."""
    rng = random.Random(seed)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < n:
        pairs.add((rng.randint(10, 99), rng.randint(10, 99)))
    return [{"a": a, "b": b, "op": "+", "answer": a + b} for a, b in sorted(pairs)]


def question(fact: dict) -> str:
    """The fixed prompt of one fact; the answer follows after a space."""
    sign = "times" if fact["op"] == "x" else "plus"
    return f"Q: What is {fact['a']} {sign} {fact['b']}?\nA:"


def two_step(fact: dict, addend: int) -> dict:
    """A problem that needs the multiplication fact: (a x b) + addend."""
    if fact["op"] != "x":
        raise ValueError("two-step problems are built on multiplication facts")
    return {"fact": fact, "addend": addend, "answer": fact["answer"] + addend,
            "question": f"Q: What is {fact['a']} times {fact['b']}, plus {addend}?\nA:"}


def first_number(text: str) -> int | None:
    """The first integer in a generation ("56", " 1,024.", "It is 56"), None when there is none."""
    m = _INT.search(text)
    if not m:
        return None
    digits = m.group(0).replace(",", "")
    return int(digits) if digits.lstrip("-").isdigit() else None


def is_correct(text: str, answer: int) -> bool:
    """Whether the first number of the generation is the answer."""
    return first_number(text) == answer


def chance_level(facts: list[dict]) -> float:
    """Accuracy of always answering the most common answer among the facts (a floor for 'above chance')."""
    answers = [f["answer"] for f in facts]
    return max(answers.count(a) for a in set(answers)) / len(answers)
