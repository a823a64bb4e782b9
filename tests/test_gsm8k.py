"""GSM8K support: vendored data, answer extraction and scoring, scaffolding detection, subsets, prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlcp_utils.measures import gsm8k


@pytest.fixture(scope="module")
def problems():
    return gsm8k.load_problems()


# --- vendored data ---------------------------------------------------------------------------------------

def test_vendored_split_has_every_problem_with_a_numeric_answer(problems):
    assert len(problems) == 1319
    assert [p["index"] for p in problems] == list(range(1319))
    for p in problems:
        assert p["question"].strip() and "####" in p["solution"]
        assert p["answer"] == gsm8k.normalise_number(p["answer"])  # already in normal form
        float(p["answer"])  # parses as a number
        assert gsm8k.is_correct(p["answer"], p["answer"])


def test_licence_and_provenance_ship_next_to_the_data():
    assert (gsm8k.DATA_DIR / "test.jsonl").is_file()
    assert "MIT License" in (gsm8k.DATA_DIR / "LICENSE").read_text(encoding="utf-8")
    source = (gsm8k.DATA_DIR / "SOURCE.md").read_text(encoding="utf-8")
    assert "openai/grade-school-math" in source and "Vendored copy" in source
    assert gsm8k.DATA_DIR.resolve().is_relative_to(Path(gsm8k.__file__).resolve().parents[1])  # package data (rlcp_utils/resources)


def test_first_problem_and_thousands_separator_in_references(problems):
    assert problems[0]["answer"] == "18" and problems[0]["question"].startswith("Janet")
    assert gsm8k.reference_answer("He earns 1,000 + 450,000\n#### 1,450,000") == "1450000"
    with pytest.raises(ValueError):
        gsm8k.reference_answer("no marker here: 18")


# --- numbers and extraction --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("18.00", "18"), ("0.50", "0.5"), ("-3", "-3"), ("$1,234", "1234"), ("18 dollars", "18"), ("$18.", "18"),
    ("50%", "50"), ("1/2", "0.5"), ("\\frac{3}{4}", "0.75"), ("-0", "0"), ("no number", None),
])
def test_normalise_number(text, expected):
    assert gsm8k.normalise_number(text) == expected


@pytest.mark.parametrize("generation, expected", [
    ("#### 1,234", "1234"),
    ("The answer is $18.", "18"),
    ("She pays -7 dollars", "-7"),
    ("The change is −7 dollars", "-7"),  # unicode minus
    ("It costs 3.50 dollars", "3.5"),
    ("Step 1: 2+3=5\nStep 2: 5*2=10\nSo 10 apples.", "10"),
    ("\\boxed{42}", "42"),
    ("The final answer is $\\boxed{1,450,000}$.", "1450000"),
    ("She walks 5 km, then 3 km. #### 8 km", "8"),
    ("The answer: 12 cookies. Later she bakes 30 more for tomorrow.", "12"),
    ("The answer is simple: 5+3=8", "8"),  # a word between phrase and number: left to the last-number rule
    ("Then 10-3=7 apples remain.", "7"),  # a minus after a digit is a subtraction, not a sign
    ("I do not know.", None),
])
def test_extract_answer(generation, expected):
    assert gsm8k.extract_answer(generation) == expected


def test_extract_answer_reads_reference_solutions(problems):
    assert all(gsm8k.extract_answer(p["solution"]) == p["answer"] for p in problems)


def test_is_correct():
    assert gsm8k.is_correct("18", "18.0")
    assert gsm8k.is_correct("$1,234.00", "1234")
    assert gsm8k.is_correct("0.5", "1/2")
    assert not gsm8k.is_correct("18", "19")
    assert not gsm8k.is_correct("18.001", "18")
    assert not gsm8k.is_correct(None, "1")
    assert not gsm8k.is_correct("none", "1")
    with pytest.raises(ValueError):
        gsm8k.is_correct("1", "no number")


# --- scaffolding --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, kind", [
    ("Step 1: add 2 and 3.\nStep 2: multiply by 2.\nThe answer is 10.", "step_headers"),
    ("**Step 1:** find the price.", "step_headers"),
    ("### STEP 2 - total", "step_headers"),
    ("1. Add the eggs.\n2. Subtract the eaten ones.", "numbered_list"),
    ("Plan:\n1) count\n2) multiply", "numbered_list"),
    ("First, she buys 3 apples. Then she eats one.", "first_then"),
    ("First, add 3, then multiply by 2.", "first_then"),
    ("Firstly: count the eggs.\nFinally: sell them.", "first_then"),
])
def test_scaffolding_positive(text, kind):
    found = gsm8k.scaffolding(text)
    assert found[kind]
    assert [k for k, v in found.items() if v] == [kind]  # each kind is detected on its own
    assert gsm8k.has_scaffolding(text)


@pytest.mark.parametrize("text", [
    "She sells 9 eggs at $2 each, so she makes 18 dollars.",
    "In the first place, he had 5 apples. Then he bought 3 more.",
    "The first day he runs 3 km. Next week he runs 5 km.",
    "1.50 dollars per apple\n2.50 dollars per pear",
    "1. The only item.",
    "2. second\n1. first",
    "In step 2 of the recipe she adds 3 eggs.",
    "",
])
def test_scaffolding_negative(text):
    assert gsm8k.scaffolding(text) == {"step_headers": False, "numbered_list": False, "first_then": False}
    assert not gsm8k.has_scaffolding(text)


def test_scaffold_patterns_cover_every_kind():
    assert set(gsm8k.SCAFFOLD_PATTERNS) == set(gsm8k.scaffolding("")) == {"step_headers", "numbered_list",
                                                                          "first_then"}


# --- subsets and prompts ------------------------------------------------------------------------------------

def test_sample_problems_is_a_fixed_sorted_subset(problems):
    a = gsm8k.sample_problems(problems, 50, seed=0)
    b = gsm8k.sample_problems(problems, 50, seed=0)
    c = gsm8k.sample_problems(problems, 50, seed=1)
    ids = [p["index"] for p in a]
    assert ids == [p["index"] for p in b]
    assert ids != [p["index"] for p in c]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert len(gsm8k.sample_problems(problems, len(problems), seed=3)) == len(problems)


def test_sample_problems_rejects_too_many(problems):
    with pytest.raises(ValueError, match="1320.*1319"):
        gsm8k.sample_problems(problems, 1320, seed=0)


def test_build_prompt_uses_the_chat_template(tiny_tokenizer):
    question = "Janet has 3 ducks. How many legs?"
    prompt = gsm8k.build_prompt(tiny_tokenizer, question)
    assert question in prompt
    assert prompt.startswith("<|im_start|>user\n")
    assert prompt.endswith("<|im_start|>assistant\n")


def test_build_prompt_needs_a_chat_template(tiny_tokenizer):
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="chat template"):
        gsm8k.build_prompt(NoTemplate(), "1+1?")


def test_repeats_itself_flags_loops_not_long_replies():
    loop = "So 3 + 4 = 7.\n\nThe answer is 7.\n\nThe answer is 7.\n\nThe answer is 7.\n"
    assert gsm8k.repeats_itself(loop)
    steps = "\n".join(f"Step {i}: add {i} to the total." for i in range(1, 8))
    assert not gsm8k.repeats_itself(steps)
    assert not gsm8k.repeats_itself("The answer is 7.\nThe answer is 7.")  # twice is not a loop
    assert not gsm8k.repeats_itself("")
