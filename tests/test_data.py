import json

import pytest

from rlcp_utils.core.config import REPO_ROOT, load_profile
from rlcp_utils.data import facts


def test_every_template_is_filled_and_leaves_the_answer_to_the_model():
    for t in facts.QUESTION_TEMPLATES:
        q = facts.question(t, "Lyon")
        assert "Lyon" in q and "{" not in q and not q.endswith(" ")
    for t in facts.EVIDENCE_TEMPLATES:
        e = facts.evidence(t, "Lyon", "France")
        assert "Lyon" in e and "France" in e
    assert len(facts.QUESTION_TEMPLATES) >= 8


def test_split_holds_out_the_last_templates():
    ts = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")
    assert [t.split for t in ts] == ["train"] * 7 + ["heldout"] * 3
    assert len({t.id for t in ts}) == len(ts)
    with pytest.raises(ValueError, match="n_heldout"):
        facts.split_templates(["a", "b"], 2, "q")


def test_plain_and_chat_rendering(tiny_tokenizer):
    q = facts.question(facts.QUESTION_TEMPLATES[0], "Lyon")
    assert facts.render(tiny_tokenizer, q, "plain") == q
    rag = facts.render(tiny_tokenizer, q, "plain", "Lyon is located in France.")
    assert rag == "Context: Lyon is located in France.\n" + q
    chat = facts.render(tiny_tokenizer, q, "chat", "Lyon is located in France.")
    # instruction and evidence in the user turn, the assistant turn starts the sentence the answer completes
    assert chat.startswith("<|im_start|>user\n") and "Context: Lyon is located in France." in chat
    assert chat.endswith("<|im_start|>assistant\n" + q)
    with pytest.raises(ValueError, match="unknown prompt format"):
        facts.render(tiny_tokenizer, q, "xml")


def test_chat_without_template_gives_clear_error(tiny_tokenizer):
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer)
    tok.chat_template = None
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        facts.render(tok, "x", "chat")


def test_answer_tokens_follow_the_prompt(tiny_tokenizer):
    prompt = facts.question(facts.QUESTION_TEMPLATES[0], "Paris")
    ids = facts.encode_prompt(tiny_tokenizer, prompt, "plain") + facts.encode_answer(tiny_tokenizer, "France")
    assert tiny_tokenizer.decode(ids) == prompt + " France"


def test_build_items_pairs_each_question_with_an_evidence_wording(tiny_tokenizer):
    pair = [{"city": "Paris", "country": "France"}, {"city": "Lima", "country": "Peru"}]
    qs = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")[:2]
    es = facts.split_templates(facts.EVIDENCE_TEMPLATES, 2, "e")[:3]
    no_ctx = facts.build_items(tiny_tokenizer, pair, qs, "plain")
    rag = facts.build_items(tiny_tokenizer, pair, qs, "plain", es)
    assert len(no_ctx) == 4 and len(rag) == 4
    assert [i["evidence_id"] for i in rag[:2]] == ["e0", "e1"]
    rag_cycled = facts.build_items(tiny_tokenizer, pair[:1], facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q"), "plain", es)
    assert [i["evidence_id"] for i in rag_cycled][:4] == ["e0", "e1", "e2", "e0"]
    assert all(i["evidence_id"] is None for i in no_ctx)
    assert all(i["country"] in i["prompt"] for i in rag)          # the evidence states the answer
    assert not any(i["country"] in i["prompt"] for i in no_ctx)   # x_no does not


def test_candidate_pool_drops_giveaways_and_ambiguous_names():
    pool = facts.candidate_pool(60, 4)
    names = [facts.fold_name(r["city"]) for r in pool]
    assert len(names) == len(set(names))
    assert not any(facts._mentions_country(r["city"], r["country"]) for r in pool)
    assert "Mexico City" not in {r["city"] for r in pool}
    assert {"Paris", "Tokyo"} <= {r["city"] for r in pool}
    assert all(r["city_population"] >= 0 and r["country"] for r in pool)


def _screened(borderline=()):
    rows = []
    for c in range(6):  # 6 countries, 4 known cities each, plus 1 unknown city each
        for k in range(5):
            city = f"city{c}_{k}"
            rows.append({"city": city, "country": f"country{c}", "recall_train": 1.0 if k < 4 else 0.2,
                         "status": "borderline" if city in borderline else "known" if k < 4 else "unknown"})
    return rows


def test_select_facts_distinct_countries_probe_cities_and_disjoint_retain():
    out = facts.select_facts(_screened(), n_targets=3, n_retain=2, min_probe_cities=2, seed=1)
    targets, retain, probe = out["targets"], out["retain"], out["probe_cities"]
    assert len({t["country"] for t in targets}) == 3
    assert [t["label"] for t in targets] == [0, 1, 2]
    target_countries = {t["country"] for t in targets}
    assert {p["country"] for p in probe} == target_countries
    assert not {p["city"] for p in probe} & {t["city"] for t in targets}
    assert all(p["status"] == "known" for p in probe)
    assert not {r["country"] for r in retain} & target_countries
    assert len({r["country"] for r in retain}) == 2  # one per country first


def test_borderline_candidates_enter_no_pool():
    borderline = {f"city{c}_{k}" for c in range(6) for k in (0, 2)}
    for draw in range(3):
        out = facts.select_facts(_screened(borderline), n_targets=3, n_retain=3, min_probe_cities=1, seed=0, draw=draw)
        chosen = {r["city"] for pool in facts.POOLS for r in out[pool]}
        assert chosen and not chosen & borderline


def test_select_facts_is_seeded_and_draws_differ():
    a = facts.select_facts(_screened(), 3, 2, 2, seed=5)
    b = facts.select_facts(_screened(), 3, 2, 2, seed=5)
    assert [t["city"] for t in a["targets"]] == [t["city"] for t in b["targets"]]
    draws = [facts.select_facts(_screened(), 3, 6, 2, seed=5, draw=d) for d in range(4)]
    assert draws[0]["targets"] == a["targets"]  # draw 0 is the seed's own draw
    assert len({tuple(r["city"] for r in d["targets"] + d["retain"]) for d in draws}) == 4


def test_select_facts_says_what_to_change_when_too_few_known():
    with pytest.raises(ValueError, match="enlarge the pool"):
        facts.select_facts(_screened(), n_targets=7, n_retain=1, min_probe_cities=2, seed=0)
    with pytest.raises(ValueError, match="n_retain"):
        facts.select_facts(_screened(), n_targets=5, n_retain=5, min_probe_cities=2, seed=0)


def _selection_params(**changes):
    params = {k: 1 for k in facts.SELECTION_PARAMETERS}
    return {**params, "model": "m", "fact_set": "unit", **changes}


def test_a_committed_fact_set_is_used_and_compared(tmp_path, monkeypatch):
    """Committed facts come back as full rows of this screening, with their labels; a selection that differs is
    reported pool by pool; other selection parameters or a missing file are errors that say what to do."""
    monkeypatch.setattr(facts, "fact_set_path", lambda name: tmp_path / f"{name}.json")
    screened = _screened()
    draws = [facts.select_facts(screened, 3, 2, 2, seed=0, draw=d) for d in range(2)]
    params = _selection_params()
    (tmp_path / "unit.json").write_text(json.dumps(facts.fact_set_record(params, "chat", draws)))
    record = facts.load_fact_set(params)
    back = facts.committed_draw(record, 1, screened)
    assert back == draws[1]
    same = facts.agreement(back, draws[1])
    assert all(r["shared"] == r["committed"] == r["selected_here"] and r["same_order"] for r in same)
    other = facts.agreement(back, draws[0])
    assert any(r["only_committed"] and r["only_here"] for r in other)
    with pytest.raises(ValueError, match=r"seed: 1 there, 2 here"):
        facts.load_fact_set(_selection_params(seed=2))
    with pytest.raises(FileNotFoundError, match="fact_set: screened"):
        facts.load_fact_set(_selection_params(fact_set="missing"))
    with pytest.raises(ValueError, match="not in this candidate pool"):
        facts.committed_draw(record, 0, [r for r in screened if r["city"] != draws[0]["targets"][0]["city"]])


def test_jsonl_roundtrip(tmp_path):
    rows = [{"city": "Bogotá", "n": 1}, {"city": "Köln", "n": 2}]
    facts.write_jsonl(tmp_path / "x.jsonl", rows)
    assert facts.read_jsonl(tmp_path / "x.jsonl") == rows


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO_ROOT / "params").glob("*.yaml")))
def test_every_profile_s_committed_fact_set_matches_its_selection_parameters(name):
    """A profile that trains on a committed fact set can load it (its selection parameters are the profile's); a
    profile with fewer draws than another on the same facts shares their first draws."""
    profile = load_profile(name)
    if profile["fact_set"] == facts.SCREENED:
        pytest.skip(f"{name} trains on this machine's selection")
    record = facts.load_fact_set(profile)
    assert len(record["draws"]) == profile["fact_draws"]
    default = json.loads(facts.fact_set_path("default").read_text())
    if record["selected_with"] == {**default["selected_with"], "fact_draws": profile["fact_draws"]}:
        assert record["draws"] == default["draws"][:profile["fact_draws"]]
