"""GSM8K for the case-study notebook: the vendored test split, answer extraction, scoring, and detection
of the "Step 1 / Step 2" scaffolding that the paper says RLCP training makes the model write.

The data ship inside the package (resources/gsm8k, MIT licence and provenance beside it), so a notebook
reads them without network access, also on Colab after `pip install`.

Numbers are handled as strings in one normal form (see `normalise_number`), so that a prediction and a
reference can be compared, printed and stored in tables the same way.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[1] / "resources" / "gsm8k"
"""The vendored GSM8K test split (test.jsonl), its LICENSE and SOURCE.md."""

ANSWER_MARKER = "####"
"""GSM8K reference solutions end with '#### <final answer>'; models trained on GSM8K often copy it."""

# One number as written in a word problem or a model's reply: an optional sign, an optional '$', an
# integer part with or without thousands separators, an optional decimal part, an optional '/denominator'.
# - A minus is a sign only when it does not follow a word, digit or closing bracket, so "10-3" is a
#   subtraction (10 and 3) while "-7", "= -7" and "pays −7" are negative numbers. '−' (U+2212) counts.
# - A comma is a thousands separator only between groups of exactly three digits: "1,234" is one number,
#   "1, 2" and "1,5" are two numbers each (European decimal commas are not supported).
# - A '.' belongs to the number only when digits follow it, so "$18." is 18.
# - A number does not start inside a word or right after a decimal point: "x2" holds no number,
#   "1.2.3" gives 1.2 only.
_NUMBER = re.compile(
    r"(?<![\w.])"
    r"(?P<sign>(?<![\w)\]])[-−](?=\$?\d))?"
    r"(?:\$(?P<sign2>[-−](?=\d))?)?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d|,\d)|\d+)"
    r"(?P<frac>\.\d+)?"
    r"(?:/(?P<den>\d+)(?!\d|\.\d))?"
)

# LaTeX fractions become "a/b" before numbers are searched: "\frac{1}{2}" -> "1/2".
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{\s*([^{}]*?)\s*\}\{\s*([^{}]*?)\s*\}")

# "the answer is 18", "Final answer: $18", "answer = 18" (case-insensitive).
_ANSWER_PHRASE = re.compile(r"\banswer\s*(?:is\b|:|=)", re.IGNORECASE)

# \boxed{...} with at most one level of nested braces inside (enough for \boxed{\frac{1}{2}}).
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")


def load_problems() -> list[dict]:
    """All 1,319 problems of the GSM8K test split, in file order.

    Each row: "index" (0-based line number, a stable id for tables and subsets), "question", "solution"
    (the full reference solution, worked steps included) and "answer" (its final number, normalised).
    The file is read fresh on every call so callers may modify the rows they get.
    """
    problems = []
    with open(DATA_DIR / "test.jsonl", encoding="utf-8") as f:
        for i, line in enumerate(f):
            row = json.loads(line)
            problems.append({"index": i, "question": row["question"], "solution": row["answer"],
                             "answer": reference_answer(row["answer"])})
    return problems


def reference_answer(solution: str) -> str:
    """The final answer of a GSM8K reference solution: what follows its last '####', normalised.

    Raises ValueError when there is no marker or no number after it: every reference must be scorable.
    """
    if ANSWER_MARKER not in solution:
        raise ValueError(f"reference solution has no {ANSWER_MARKER!r} marker: {solution[-80:]!r}")
    answer = normalise_number(solution.rsplit(ANSWER_MARKER, 1)[1])
    if answer is None:
        raise ValueError(f"no number after {ANSWER_MARKER!r} in reference solution: {solution[-80:]!r}")
    return answer


def _format(value: Decimal) -> str:
    """Plain decimal notation without trailing zeros: 18.00 -> "18", 0.50 -> "0.5", -0 -> "0"."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _to_string(match: re.Match) -> str | None:
    """The normal form of one _NUMBER match (None for a zero denominator)."""
    value = Decimal(match["int"].replace(",", "") + (match["frac"] or ""))
    if match["den"] is not None:
        if int(match["den"]) == 0:
            return None
        value = value / Decimal(match["den"])
    if match["sign"] or match["sign2"]:
        value = -value
    return _format(value)


def _numbers(text: str) -> list[str]:
    """Every number in `text`, in order, in normal form."""
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    return [s for s in (_to_string(m) for m in _NUMBER.finditer(text)) if s is not None]


def normalise_number(text: str) -> str | None:
    """The first number in `text` in one normal form, or None when there is none.

    Rules (chosen so that a prediction and a GSM8K reference compare as strings and as values):
    - words, units and symbols around the number are dropped: "$18.", "18 dollars", "5 km", "50%" -> "18",
      "18", "5", "50";
    - thousands separators go: "1,234" and "$1,450,000" -> "1234", "1450000" (a comma counts as a separator
      only between groups of three digits, so "1,5" is 1, not 1.5);
    - trailing zeros of decimals go: "18.00" -> "18", "0.50" -> "0.5", and "-0" -> "0";
    - a minus sign right before the number, hyphen or '−' (U+2212), is kept: "-3", "−3" -> "-3";
    - simple fractions become their decimal value: "1/2" and "\\frac{1}{2}" -> "0.5", "6/3" -> "2"
      ("1/3" gives 28 significant digits); mixed numbers such as "1 1/2" are NOT supported (-> "1");
    - scientific notation and numbers written in words ("five") are not recognised.
    When `text` holds several numbers the first one wins: callers pass the short span that holds the answer.
    """
    numbers = _numbers(text)
    return numbers[0] if numbers else None


def _number_right_after(text: str) -> str | None:
    """The first number of `text` if no word stands before it (LaTeX commands such as \\boxed excepted)."""
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    for match in _NUMBER.finditer(text):
        value = _to_string(match)
        if value is not None:
            gap = re.sub(r"\\[A-Za-z]+", "", text[:match.start()])
            return None if re.search(r"[^\W\d_]", gap) else value
    return None


def extract_answer(generation: str) -> str | None:
    """The final answer of a model's reply, normalised, or None when the reply holds no number.

    The first rule that finds a number decides:
    1. the text after the last '####' (the GSM8K answer format);
    2. the last "answer is X" / "answer: X" / "answer = X" phrase directly followed by a number: only
       spaces, punctuation, markdown and LaTeX wrappers may stand between ("The answer is: **$18**",
       "answer is $\\boxed{18}$"); "The answer is simple: 5+3=8" is not read as 5 but left to rule 4;
    3. the last \\boxed{X};
    4. otherwise the last number in the reply.
    Rule 4 is deliberately simple: in "Step 1: 2+3=5 Step 2: 5*2=10 So 10 apples." it gives 10, because the
    step numbers come before the results; but a reply that stops right after a header ("... Step 3:")
    gives the header's number (a reply cut off there is most likely wrong anyway); it is left that way
    rather than patched with more heuristics.
    """
    if ANSWER_MARKER in generation:
        answer = normalise_number(generation.rsplit(ANSWER_MARKER, 1)[1])
        if answer is not None:
            return answer
    for phrase in reversed(list(_ANSWER_PHRASE.finditer(generation))):
        answer = _number_right_after(generation[phrase.end():].split("\n", 1)[0])
        if answer is not None:
            return answer
    for boxed in reversed(_BOXED.findall(generation)):
        answer = normalise_number(boxed)
        if answer is not None:
            return answer
    numbers = _numbers(generation)
    return numbers[-1] if numbers else None


def is_correct(prediction: str | None, reference: str, tol: float = 1e-6) -> bool:
    """Whether the prediction equals the reference as a number (absolute tolerance `tol`).

    Both sides go through `normalise_number`, so "18", "18.0" and "$18" all match "18". A missing
    prediction (None, or a string without a number) is wrong. A reference without a number raises
    ValueError: that is a bug in the caller, not a wrong answer.
    """
    ref = normalise_number(reference)
    if ref is None:
        raise ValueError(f"reference {reference!r} holds no number")
    pred = normalise_number(prediction) if prediction is not None else None
    if pred is None:
        return False
    return abs(Decimal(pred) - Decimal(ref)) <= Decimal(str(tol))


# Start of a line, allowing markdown decoration before the text: "## ", "**", "- ", "> ".
_LINE_START = r"^[ \t]*(?:[#>*_-]+[ \t]*)*"
# Start of a sentence: start of the text or a line, or after '.', '!', '?', ';' (markdown allowed).
_SENTENCE_START = r"(?:^|(?<=[.!?;])[ \t]+)[ \t]*(?:[#>*_-]+[ \t]*)*"

SCAFFOLD_PATTERNS: dict[str, re.Pattern] = {
    # "Step 1", "Step 2:", "**Step 3.**", "### step 4" at the start of a line (case-insensitive).
    # "in step 2 we ..." inside a sentence is prose, not a header.
    "step_headers": re.compile(_LINE_START + r"step[ \t]+\d+\b", re.IGNORECASE | re.MULTILINE),
    # One list item: a line starting with "1." or "2)" followed by a space. The whitespace requirement
    # keeps prices such as "1.50" out; `scaffolding` also requires an item n followed later by item n+1.
    "numbered_list": re.compile(_LINE_START + r"(\d{1,2})[.)](?=[ \t]|\*\*)", re.MULTILINE),
    # A sentence opening with "First," / "Firstly," / "First of all," / "First:", later followed by a
    # sentence or clause (after a comma) opening with "Then", "Next", "Finally" or "Second(ly)".
    # "in the first place", "the first day" and "First National Bank" do not open a sentence with "First"
    # plus a comma or colon.
    "first_then": re.compile(
        _SENTENCE_START + r"first(?:ly| of all)?[ \t]*[,:]"
        r".*?"
        r"(?:^|(?<=[.!?;:,])[ \t]+)[ \t]*(?:[#>*_-]+[ \t]*)*(?:then|next|finally|second(?:ly)?)\b",
        re.IGNORECASE | re.MULTILINE | re.DOTALL,
    ),
}
"""How each kind of scaffolding is recognised; see `scaffolding` for the exact rule per key."""


def _has_ordered_list(text: str) -> bool:
    """At least two list items in order: some item n followed, later in the text, by item n+1."""
    seen: set[int] = set()
    for m in SCAFFOLD_PATTERNS["numbered_list"].finditer(text):
        n = int(m.group(1))
        if n - 1 in seen:
            return True
        seen.add(n)
    return False


def scaffolding(text: str) -> dict[str, bool]:
    """Which kinds of explicit step-by-step scaffolding a reply uses.

    - "step_headers": at least one line opening with "Step <number>" (the paper's claim about RLCP
      replies, so it is kept separate from the other kinds);
    - "numbered_list": at least two numbered lines in order ("1." then "2)", ...);
    - "first_then": a "First," sentence followed later by a sentence or a clause (", then") that opens
      with "Then", "Next", "Finally" or "Second".
    """
    return {
        "step_headers": SCAFFOLD_PATTERNS["step_headers"].search(text) is not None,
        "numbered_list": _has_ordered_list(text),
        "first_then": SCAFFOLD_PATTERNS["first_then"].search(text) is not None,
    }


def has_scaffolding(text: str) -> bool:
    """Whether a reply uses any kind of scaffolding that `scaffolding` recognises."""
    return any(scaffolding(text).values())


def repeats_itself(text: str, times: int = 3) -> bool:
    """Degenerate looping: some non-empty line (whitespace-trimmed) occurs at least `times` times, as in
    "The answer is 60.\n\nThe answer is 60.\n\n...". Longer replies with the same content are not more
    verbose reasoning; this separates the two."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return any(lines.count(line) >= times for line in set(lines))


def sample_problems(problems: list[dict], n: int, seed: int) -> list[dict]:
    """A fixed subset of `n` problems for a seed, in index order, without repeats.

    Seeded so that every arm of the case study is evaluated on the same problems, and a rerun with the
    same profile picks them again (numpy Generator(seed).choice without replacement).
    """
    if not 0 <= n <= len(problems):
        raise ValueError(f"cannot sample n={n} problems from {len(problems)}: n must be between 0 and "
                         f"{len(problems)}")
    chosen = np.random.default_rng(seed).choice(len(problems), size=n, replace=False)
    return sorted((problems[i] for i in chosen), key=lambda row: row["index"])


def build_prompt(tokenizer, question: str) -> str:
    """The prompt text for one problem: the model's chat template with the question as the only user
    turn, ending with the assistant header (add_generation_prompt=True).

    As in the paper, the question is given plainly and decoded greedily: no few-shot examples, no system
    prompt and no added instruction (e.g. "think step by step"), so any scaffolding in the reply comes from
    the model itself. Raises ValueError when the tokenizer has no chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; GSM8K prompts need the model's chat format")
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)
