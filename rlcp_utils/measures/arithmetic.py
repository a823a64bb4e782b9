"""Arithmetic facts inside the reasoning domain (the open-questions notebook, part 4: the paper's limitation 1).

Single-digit multiplication facts ("7 x 8" -> "56") are cast as the study's facts ({'city': '7 x 8',
'country': '56'}), so that the one training loop, the item builder and the evaluation of 02/03 apply
unchanged: no-context prompts from QUESTIONS, RAG prompts with the fact stated by EVIDENCES, answers scored
by teacher forcing. A two-step problem needs one fact and one addition, asked with a scaffold that makes the
model state the product first ("Q: What is 7 x 8 + 5?\nA: First, 7 x 8 ="): without the scaffold the 135M
model is at the floor (about 3% on the 36 facts, measured in the notebook's design), with it well above.
Which task the model does above chance is a measurement (the notebook), not an assumption made here.
"""

from __future__ import annotations

import random
import re

from rlcp_utils.data.facts import Template, split_templates

_INT = re.compile(r"-?\d[\d,]*")

# No-context wordings (the last two held out of training) and evidence wordings (the last one held out);
# {city} is the product's left side ("7 x 8"), {country} the answer ("56").
QUESTIONS = ["{city} =", "Q: What is {city}?\nA:", "What is {city}? The answer is", "{city} equals",
             "Compute {city}. Result:", "Multiplication table: {city} =", "How much is {city}? It is"]
EVIDENCES = ["{city} = {country}.", "Fact: {city} equals {country}.", "From the multiplication table, {city} is {country}."]
N_HELDOUT_QUESTIONS, N_HELDOUT_EVIDENCES = 2, 1


def templates() -> tuple[list[Template], list[Template]]:
    """The arithmetic questions and evidences, split train / held out by the study's rule (the last ones out)."""
    return split_templates(QUESTIONS, N_HELDOUT_QUESTIONS, "aq"), split_templates(EVIDENCES, N_HELDOUT_EVIDENCES, "ae")


def multiplication_facts(lo: int = 2, hi: int = 9) -> list[dict]:
    """Every a x b with lo <= a <= b <= hi (a x b and b x a are one fact), as study facts."""
    return [{"a": a, "b": b, "city": f"{a} x {b}", "country": str(a * b), "answer": a * b}
            for a in range(lo, hi + 1) for b in range(a, hi + 1)]


def two_step(fact: dict, addend: int) -> dict:
    """A problem that needs the fact: (a x b) + addend, scaffolded so that the product is stated first."""
    a, b = fact["a"], fact["b"]
    return {"city": fact["city"], "addend": addend, "product": fact["answer"], "answer": fact["answer"] + addend,
            "question": f"Q: What is {a} x {b} + {addend}?\nA: First, {a} x {b} ="}


def two_step_problems(facts: list[dict], per_fact: int, seed: int) -> list[dict]:
    """`per_fact` problems per fact with distinct addends drawn from 1..9 (seeded)."""
    rng = random.Random(seed)
    return [two_step(f, c) for f in facts for c in sorted(rng.sample(range(1, 10), per_fact))]


def numbers(text: str) -> list[int]:
    return [int(m.replace(",", "")) for m in _INT.findall(text) if m.replace(",", "").lstrip("-").isdigit()]


def first_number(text: str) -> int | None:
    """The first integer in a generation (" 56", " 1,024.", "It is 56"), None when there is none."""
    found = numbers(text)
    return found[0] if found else None


def score_two_step(text: str, problem: dict) -> dict:
    """A scaffolded continuation (" 56, then 56 + 5 = 61."): `product_right` when its first number is the
    product, `answer_right` when the last number of its first line is the final answer, and `step_right` when
    that last number is the first number plus the addend (the addition done on whatever product was stated:
    the reasoning step, right or wrong fact)."""
    line = text.split("\n")[0]
    found = numbers(line)
    return {"product_right": bool(found) and found[0] == problem["product"],
            "answer_right": bool(found) and found[-1] == problem["answer"],
            "step_right": len(found) >= 2 and found[-1] == found[0] + problem["addend"]}
