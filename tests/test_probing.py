"""Post-hoc probes and geometry on synthetic data where the answer is known, and state extraction on tiny
random models (checked against a plain forward pass)."""

import numpy as np
import pytest
import torch

from rlcp_utils.data import facts
from rlcp_utils.measures import probing

K, D = 6, 40


def clustered(rng, n_per_class, scale, templates=5):
    means = rng.normal(size=(K, D))
    y = np.repeat(np.arange(K), n_per_class * templates)
    groups = np.tile(np.repeat(np.arange(templates), 1), K * n_per_class)
    return means[y] * scale + rng.normal(size=(len(y), D)), y, groups


def test_linear_probe_reads_separable_labels_and_fails_on_shuffled_ones():
    rng = np.random.default_rng(0)
    X, y, g = clustered(rng, 1, scale=3.0, templates=8)
    train, test = g < 5, g >= 5  # held-out "templates"
    pred = probing.linear_probe(X[train], y[train], g[train], X[test])
    assert (pred == y[test]).mean() > 0.95
    # labels carry no information about X: accuracy near chance 1/K on many held-out points
    X2 = rng.normal(size=(600, D))
    y2 = rng.integers(0, K, size=600)
    g2 = np.arange(600) % 6
    pred = probing.linear_probe(X2[:400], y2[:400], g2[:400], X2[400:])
    assert abs((pred == y2[400:]).mean() - 1 / K) < 0.1


def test_mlp_beats_linear_on_a_nonlinear_only_signal():
    # XOR of two coordinates: no linear direction separates the classes; a small MLP does
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(1200, 4))
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(int)
    g = np.arange(1200) % 5
    tr, te = slice(0, 900), slice(900, None)
    lin = (probing.linear_probe(X[tr], y[tr], g[tr], X[te]) == y[te]).mean()
    mlp = (probing.mlp_probe(X[tr], y[tr], X[te], seed=0) == y[te]).mean()
    assert lin < 0.65 and mlp > 0.85


def test_control_labels_are_fixed_per_group_and_seeded():
    groups = np.array(["Rome", "Rome", "Paris", "Lima", "Paris", "Rome"])
    a = probing.control_labels(groups, 15, seed=3)
    assert len({a[i] for i in np.flatnonzero(groups == "Rome")}) == 1 and a[1] == a[5]
    assert np.array_equal(a, probing.control_labels(groups, 15, seed=3))
    draws = [tuple(probing.control_labels(np.arange(30), 15, seed=s)) for s in range(3)]
    assert len(set(draws)) == 3 and all(0 <= v < 15 for v in draws[0])


def test_type_geometry_and_nearest_neighbour_see_collapse():
    rng = np.random.default_rng(2)
    centroids = rng.normal(size=(3, D)) * 10
    entity_offsets = rng.normal(size=(3, 8, D)) * 3  # 3 types x 8 entities
    frames = 4

    def states(identity_scale):
        X, types, entity, frame = [], [], [], []
        for t in range(3):
            for e in range(8):
                for f in range(frames):
                    X.append(centroids[t] + identity_scale * entity_offsets[t, e] + 0.3 * rng.normal(size=D))
                    types.append(t), entity.append(t * 8 + e), frame.append(f)
        return np.array(X), np.array(types), np.array(entity), np.array(frame)

    X, types, entity, frame = states(1.0)
    Xc, *_ = states(0.0)  # identities collapsed onto their type centroid
    before, after = probing.type_geometry(X, types), probing.type_geometry(Xc, types)
    assert after["within_to_between"] < 0.3 * before["within_to_between"]
    assert after["silhouette"] > before["silhouette"] and after["silhouette"] > 0.8
    assert probing.identity_nearest_neighbour(X, entity, frame).mean() > 0.95
    assert probing.identity_nearest_neighbour(Xc, entity, frame).mean() < 0.4  # chance 1/24 across all, 1/8 within type


def test_last_token_of_finds_the_city_s_last_token(tiny_tokenizer):
    q = facts.Template("q8", "Where is {city}? {city} is in the country of", "train")
    text = facts.render(tiny_tokenizer, facts.question(q, "Nairobi"), "chat")
    ids = facts.encode_prompt(tiny_tokenizer, text, "chat")
    k = probing.last_token_of(tiny_tokenizer, text, "Nairobi")
    assert tiny_tokenizer.decode(ids[: k + 1]).endswith("Where is Nairobi? Nairobi")
    with pytest.raises(ValueError, match="does not occur"):
        probing.last_token_of(tiny_tokenizer, text, "Lima")


def test_hidden_states_at_match_an_unpadded_forward(tiny_model, tiny_tokenizer):
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]
    out = probing.hidden_states_at(tiny_model, prompts, {"second": [1, 1, 1]}, batch_size=2, pad_id=tiny_tokenizer.pad_token_id)
    n_layers = tiny_model.config.num_hidden_layers + 1
    assert out["last"].shape == (3, n_layers, tiny_model.config.hidden_size)
    for j, p in enumerate(prompts):
        with torch.no_grad():
            hs = tiny_model(torch.tensor([p]), output_hidden_states=True).hidden_states
        ref = torch.stack(hs, 1)[0]
        np.testing.assert_allclose(out["last"][j], ref[:, -1].numpy(), atol=1e-4)
        np.testing.assert_allclose(out["second"][j], ref[:, 1].numpy(), atol=1e-4)


def test_logit_lens_at_the_last_layer_is_the_model_s_own_prediction(tiny_model):
    prompts = [[5, 6, 7, 8], [9, 10, 11, 12]]
    states = probing.hidden_states_at(tiny_model, prompts)["last"]
    with torch.no_grad():
        logits = tiny_model(torch.tensor(prompts)).logits[:, -1]
    top = logits.argmax(-1).tolist()
    lens = probing.logit_lens(tiny_model, states, top)
    assert lens["answer_top1"][:, -1].all()
    np.testing.assert_allclose(lens["answer_prob"][:, -1], torch.softmax(logits, -1).max(-1).values.numpy(), rtol=1e-4)
    # intermediate layers are read through the final norm: scaling a state does not change the readout
    scaled = probing.logit_lens(tiny_model, states * 3.0, top)
    np.testing.assert_allclose(scaled["answer_prob"][:, 1], lens["answer_prob"][:, 1], rtol=1e-3)


def test_probes_fall_back_to_the_only_class_seen():
    X = np.random.default_rng(0).normal(size=(10, 3))
    y = np.full(10, 2)
    assert (probing.linear_probe(X, y, np.arange(10) % 2, X[:4]) == 2).all()
    assert (probing.mlp_probe(X, y, X[:4]) == 2).all()


def test_geometry_is_undefined_not_infinite_when_states_coincide():
    rng = np.random.default_rng(0)
    one = rng.standard_normal(16).astype(np.float32)
    X = np.tile(one, (12, 1)) * np.float32(1 + 1e-9)  # the same vector, as layer 0 gives for one token
    types = np.repeat(["city", "fruit", "number"], 4)
    g = probing.type_geometry(X, types)
    assert np.isnan(g["within_to_between"]) and np.isnan(g["silhouette"])
    nn = probing.identity_nearest_neighbour(X, np.arange(12) % 4, np.arange(12) // 4)
    assert np.isnan(nn).all()
    assert not probing.states_coincide(X + rng.standard_normal(X.shape).astype(np.float32))


def _country_data(rng, noise=0.1):
    """3 countries (labels 0-2), each with a target city and 2-4 other cities, 4 prompts per city; states: the
    country's one-hot direction plus noise."""
    others = {"A": ["a1", "a2", "a3", "a4"], "B": ["b1", "b2", "b3"], "C": ["c1", "c2"]}
    cities, countries = [], []
    for k, cs in others.items():
        for c in [f"target_{k}"] + cs:
            cities += [c] * 4
            countries += [k] * 4
    cities, countries = np.array(cities), np.array(countries)
    labels = np.array([{"A": 0, "B": 1, "C": 2}[k] for k in countries])
    X = np.eye(3)[labels] * 3 + noise * rng.normal(size=(len(labels), 3))
    return X, labels, cities, countries, np.char.startswith(cities, "target_"), others


def test_country_held_out_draws_one_city_of_each_country_with_two_or_more():
    others = {"B": ["b2", "b1"], "A": ["a1", "a3", "a2"], "C": ["c1"]}
    for seed in range(5):
        held = probing.country_held_out(others, seed)
        assert len(held) == 2 and len(held & {"a1", "a2", "a3"}) == 1 and len(held & {"b1", "b2"}) == 1
        assert held == probing.country_held_out(dict(reversed(list(others.items()))), seed)  # order of the dict: no matter
        # the draws 04 made before the rule moved here: countries in alphabetical order, each from its sorted cities
        rng = np.random.default_rng(seed)
        assert held == {str(rng.choice(sorted(others[k]))) for k in ["A", "B"]}
    assert len({frozenset(probing.country_held_out(others, s)) for s in range(10)}) > 1


def test_country_probe_on_targets_trains_without_the_held_out_cities_and_tests_every_target(monkeypatch):
    X, labels, cities, countries, is_target, others = _country_data(np.random.default_rng(0))
    out = probing.country_probe_on_targets(X, labels, cities, countries, is_target, 3, 7)
    assert len(out) == 3 * is_target.sum() and list(out.split.unique()) == [0, 1, 2]
    assert out.correct.all()  # separable countries: every target prompt read right
    assert set(out.city) == {"target_A", "target_B", "target_C"}

    seen = []
    real = probing.linear_probe
    monkeypatch.setattr(probing, "linear_probe", lambda Xt, yt, groups, Xs, seed: seen.append((set(groups), seed)) or real(Xt, yt, groups, Xs, seed))
    probing.country_probe_on_targets(X, labels, cities, countries, is_target, 3, 7, n_jobs=1)  # in this process
    assert len(seen) == 3
    for i, (trained_on, cv_seed) in enumerate(seen):
        held = probing.country_held_out(others, 7 + i)
        assert cv_seed == i and not trained_on & held and not any(c.startswith("target_") for c in trained_on)
        assert trained_on | held == {c for cs in others.values() for c in cs}


def test_country_probe_on_targets_is_near_chance_without_a_signal():
    rng = np.random.default_rng(1)
    X, labels, cities, countries, is_target, _ = _country_data(rng)
    X = rng.normal(size=X.shape)
    out = probing.country_probe_on_targets(X, labels, cities, countries, is_target, 3, 0)
    assert out.correct.mean() < 0.8


def test_country_probe_prompts_label_other_cities_by_their_country_s_target(tiny_tokenizer, tiny_model):
    from types import SimpleNamespace

    study = SimpleNamespace(
        targets=[{"city": "Nairobi", "country": "Kenya", "label": 0}, {"city": "Lima", "country": "Peru", "label": 1}],
        probe_cities=[{"city": "Cairo", "country": "Peru"}, {"city": "Tokyo", "country": "Kenya"}, {"city": "Paris", "country": "Peru"}],
        questions=facts.split_templates(facts.QUESTION_TEMPLATES[:3], 1, "q"), prompt_format="chat")
    p = probing.country_probe_prompts(tiny_tokenizer, study)
    n_q = len(study.questions)
    assert len(p.items) == 5 * n_q and p.is_target.tolist() == [True] * (2 * n_q) + [False] * (3 * n_q)
    by_city = dict(zip(p.city, p.label))
    assert by_city == {"Nairobi": 0, "Lima": 1, "Cairo": 1, "Tokyo": 0, "Paris": 1}  # the class is the country's target
    for item, k in zip(p.items, p.city_position):
        assert tiny_tokenizer.decode(item["prompt_ids"][: k + 1]).endswith(item["city"])

    out = probing.country_probe_of_model(tiny_model, p, 1, 2, 0, 4, tiny_tokenizer.pad_token_id)
    # both positions, every split, each target prompt once per split and position
    assert sorted(out.position.unique()) == ["city", "last"] and sorted(out.split.unique()) == [0, 1]
    assert len(out) == 2 * 2 * p.is_target.sum() and set(out.city) == {"Nairobi", "Lima"}
