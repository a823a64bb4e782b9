"""Gradient cosines and the first-order prediction of Proposition 3.2, on tiny random models."""

import math

import pytest
import torch

from rlcp_utils.core import batching
from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate, gradients
from rlcp_utils.data import inputs

FACTS = [{"city": c, "country": k, "label": i} for i, (c, k) in
         enumerate([("Berlin", "Germany"), ("Paris", "France"), ("Tokyo", "Japan"), ("Lima", "Peru")])]


def _loss(tok, fact_list):
    qs = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")
    es = facts.split_templates(facts.EVIDENCE_TEMPLATES, 2, "e")
    items = inputs.make_train_items(tok, fact_list, qs, es, "plain")[:6]

    def loss(model):  # the answers' mean CE in the model's own dtype (float64 where the test needs it)
        ids, mask = batching.right_pad([it.no_ids for it in items], tok.pad_token_id)
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits, -1)
        return -torch.stack([logp[j, it.no_prompt_len - 1 + k, ids[j, it.no_prompt_len + k]]
                             for j, it in enumerate(items) for k in range(it.answer_len)]).mean()
    return loss


def test_parameter_groups_by_name():
    assert gradients.parameter_group("model.embed_tokens.weight") == "embeddings"
    assert gradients.parameter_group("model.layers.3.self_attn.q_proj.weight") == "attention.3"
    assert gradients.parameter_group("model.layers.12.mlp.down_proj.weight") == "mlp.12"
    assert gradients.parameter_group("model.layers.0.input_layernorm.weight") == "other"
    assert gradients.parameter_group("model.norm.weight") == "other"


def test_cosine_of_a_loss_with_itself_is_one_and_with_its_negative_minus_one(tiny_model, tiny_tokenizer):
    loss = _loss(tiny_tokenizer, FACTS[:2])
    g = gradients.gradient(tiny_model, loss)
    neg = gradients.gradient(tiny_model, lambda m: -loss(m))
    same = gradients.cosines(g, g)
    opposite = gradients.cosines(g, neg)
    assert same["all"] == pytest.approx(1.0, abs=1e-6) and opposite["all"] == pytest.approx(-1.0, abs=1e-6)
    for k in g:
        if g[k].norm() > 0:
            assert same[k] == pytest.approx(1.0, abs=1e-5) and opposite[k] == pytest.approx(-1.0, abs=1e-5)
    assert {"embeddings", "attention.0", "mlp.0"} <= set(g)
    assert all(p.grad is None for p in tiny_model.parameters())  # the model is left as it was


def test_cosine_on_a_hand_computed_case():
    a = {"x": torch.tensor([1.0, 0.0]), "y": torch.tensor([0.0, 0.0])}
    b = {"x": torch.tensor([1.0, 1.0]), "y": torch.tensor([0.0, 2.0])}
    c = gradients.cosines(a, b)
    assert c["x"] == pytest.approx(1 / math.sqrt(2)) and math.isnan(c["y"])
    assert c["all"] == pytest.approx(1 / math.sqrt(6))  # (1) / (1 * sqrt(1 + 1 + 4))


def test_first_order_prediction_matches_a_small_step(tiny_model, tiny_tokenizer):
    import copy

    model = copy.deepcopy(tiny_model).double()  # float64: a small step's loss change is far above rounding
    fact, logic = _loss(tiny_tokenizer, FACTS[:2]), _loss(tiny_tokenizer, FACTS[2:])
    out, up, own_fact = gradients.first_order_steps(model, fact, {"logic": logic, "fact": fact}, [1e-4], [-1, 1])[:3]
    assert (out["moved"], out["direction"], up["direction"], own_fact["moved"]) == ("logic", -1, 1, "fact")
    assert out["bound"] == pytest.approx(abs(out["first_order_prediction"]), rel=1e-6)  # at first order, equality
    assert out["measured_change"] == pytest.approx(out["first_order_prediction"], rel=0.02)
    assert 0 <= out["delta"] <= 1
    # a step on the logic loss itself lowers it by about eta * |grad|^2
    (own,) = gradients.first_order_steps(model, logic, {"logic": logic}, [1e-4], [-1])
    assert own["measured_change"] < 0 and own["delta"] == pytest.approx(1.0, abs=1e-6)
    # the fact loss moved by its own step: its gradient is reused, the same closed form (delta 1, a descent)
    assert own_fact["delta"] == pytest.approx(1.0, abs=1e-6) and own_fact["measured_change"] < 0
    # ascent (the direction unlikelihood forgets in) raises it: the prediction changes sign, the bound does not
    assert up["first_order_prediction"] == pytest.approx(-out["first_order_prediction"], rel=1e-9)
    assert up["bound"] == pytest.approx(out["bound"], rel=1e-9)
    assert up["measured_change"] == pytest.approx(up["first_order_prediction"], rel=0.02)
    # one step at a time gives the same rows as the batch
    (alone,) = gradients.first_order_steps(model, fact, {"logic": logic}, [1e-4], [1])
    assert alone["measured_change"] == pytest.approx(up["measured_change"], rel=1e-9)
    with pytest.raises(ValueError, match="direction"):
        gradients.first_order_steps(model, fact, {"logic": logic}, [1e-4], [0])

def test_the_answer_loss_is_the_training_loss_and_the_monitor_measures_every_kth_step(tiny_model, tiny_tokenizer):
    qs = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")
    items = facts.build_items(tiny_tokenizer, FACTS, [q for q in qs if q.split == "train"][:1], "plain")
    loss = gradients.answer_loss([i["prompt_ids"] for i in items], [i["answer_ids"] for i in items], tiny_tokenizer.pad_token_id)
    logp = evaluate.score_answers(tiny_model, [i["prompt_ids"] for i in items], [i["answer_ids"] for i in items])
    n_tokens = [len(i["answer_ids"]) for i in items]
    expected = sum(-lp / n for lp, n in zip(logp["answer_logprob"], n_tokens)) / len(items)
    assert float(loss(tiny_model).detach()) == pytest.approx(expected, rel=1e-4)
    half = gradients.answer_loss([i["prompt_ids"] for i in items[:2]], [i["answer_ids"] for i in items[:2]], tiny_tokenizer.pad_token_id)
    measure = gradients.monitor({"all": loss, "half": half, "neg": lambda m: -loss(m)},
                                {"all vs half": ("all", "half"), "all vs neg": ("all", "neg")}, every=2)
    assert measure(1, tiny_model) == []
    rows = measure(2, tiny_model)
    overall = {r["of"]: r["value"] for r in rows if r["measure"] == "cosine" and r["group"] == "all"}
    assert overall["all vs neg"] == pytest.approx(-1.0, abs=1e-5) and -1 <= overall["all vs half"] <= 1
    norms = {r["of"]: r["value"] for r in rows if r["measure"] == "norm"}
    assert norms["all"] == pytest.approx(norms["neg"], rel=1e-6) and norms["all"] > 0
    assert {r["step"] for r in rows} == {2}
    # the end of training is measured even off the grid
    at_end = gradients.monitor({"all": loss}, {}, every=2, last=3)
    assert at_end(3, tiny_model) and not at_end(1, tiny_model)


def test_a_chunked_answer_loss_has_the_gradient_of_the_whole_batch(tiny_model, tiny_tokenizer):
    """Chunks keep one chunk's activations in memory: the loss and its gradient must be those of the whole batch
    (the chunks' gradients weighted by their share of the prompts), uneven last chunk included."""
    qs = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")
    items = facts.build_items(tiny_tokenizer, FACTS, [q for q in qs if q.split == "train"][:2], "plain")
    prompts, answers = [i["prompt_ids"] for i in items], [i["answer_ids"] for i in items]
    assert len(items) % 3 != 0
    whole, chunked = gradients.answer_loss(prompts, answers, tiny_tokenizer.pad_token_id, chunk=len(items)), \
        gradients.answer_loss(prompts, answers, tiny_tokenizer.pad_token_id, chunk=3)
    assert len(whole.chunks) == 1 and len(chunked.chunks) == -(-len(items) // 3)
    assert float(chunked(tiny_model)) == pytest.approx(float(whole(tiny_model)), rel=1e-5)
    g_whole, g_chunked = gradients.gradient(tiny_model, whole), gradients.gradient(tiny_model, chunked)
    for group in g_whole:
        assert torch.allclose(g_chunked[group], g_whole[group], rtol=1e-4, atol=1e-7), group
    # and a plain callable is one chunk of weight 1
    g_plain = gradients.gradient(tiny_model, lambda m: whole(m))
    assert all(torch.equal(g_plain[k], g_whole[k]) for k in g_whole)
