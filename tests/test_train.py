"""Algorithm 1 on tiny random models: the GRL, the schedule, the sign and inputs of every loss term, and the
direction in which one step moves the adversary's loss for the probe and for the backbone; the one loop."""

import copy
import dataclasses
import math

import pytest
import torch

from rlcp_utils.core import answers, batching
from rlcp_utils.core.config import load_profile
from rlcp_utils.data import facts, inputs
from rlcp_utils.methods import common, just_rag, registry, rlcp, rmu
from rlcp_utils.training import loop

FACTS = [{"city": c, "country": k, "label": i} for i, (c, k) in
         enumerate([("Berlin", "Germany"), ("Paris", "France"), ("Tokyo", "Japan"), ("Lima", "Peru")])]


def test_grl_is_identity_forward_and_reverses_gradient():
    x = torch.randn(3, 5, requires_grad=True)
    y = rlcp.gradient_reversal(x, 0.7)
    assert torch.equal(y, x)
    g = torch.randn(3, 5)
    y.backward(g)
    torch.testing.assert_close(x.grad, -0.7 * g)


def test_alpha_schedule_matches_the_paper():
    assert rlcp.alpha_schedule(0.0) == 0.0
    assert rlcp.alpha_schedule(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert rlcp.alpha_schedule(0.5) == pytest.approx(0.98661, abs=1e-4)  # 2/(1+e^-5)-1
    values = [rlcp.alpha_schedule(p / 10) for p in range(11)]
    assert values == sorted(values) and values[-1] < 1


def test_every_arm_reads_its_weights_from_the_profile():
    p = load_profile("default")
    assert vars(registry.method("rlcp").weights(p)) == {"lambda_rag": p["lambda_rag"], "lambda_adv": p["lambda_adv"],
                                                        "unlikelihood_weight": p["unlikelihood_weight"], "lambda_kl": p["lambda_kl"]}
    assert vars(registry.method("just_rag").weights(p)) == {"lambda_rag": p["lambda_rag"], "lambda_kl": p["lambda_kl"]}
    assert vars(registry.method("unlikelihood").weights(p)) == {"unlikelihood_weight": p["unlikelihood_weight"],
                                                                "lambda_kl": p["lambda_kl"]}
    assert registry.PAPER_ARMS == ("just_rag", "unlikelihood", "rlcp")
    assert registry.BENCHMARK_ARMS == ("selective_rlcp", "grad_diff", "npo", "rmu")
    with pytest.raises(ValueError, match="unknown arm"):
        registry.method("grl_only")


def _items(tok):
    qs = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")
    es = facts.split_templates(facts.EVIDENCE_TEMPLATES, 2, "e")
    return inputs.make_train_items(tok, FACTS, qs, es, "plain")


def test_train_items_hold_x_no_and_x_rag_with_the_answer(tiny_tokenizer):
    items = _items(tiny_tokenizer)
    assert len(items) == len(FACTS) * 7  # training templates only
    it = items[0]
    assert tiny_tokenizer.decode(it.no_ids[it.no_prompt_len:]) == " Germany"
    assert tiny_tokenizer.decode(it.rag_ids[it.rag_prompt_len:]) == " Germany"
    assert "Germany" in tiny_tokenizer.decode(it.rag_ids[:it.rag_prompt_len])
    assert "Germany" not in tiny_tokenizer.decode(it.no_ids[:it.no_prompt_len])


def test_epoch_schedule_shows_each_fact_once_per_epoch_and_cycles_templates(tiny_tokenizer):
    items = _items(tiny_tokenizer)
    batches = loop.epoch_schedule(items, len(FACTS), epochs=3, batch_size=3, seed=0)
    assert len(batches) == 3 * 2 and [len(b) for b in batches[:2]] == [3, 1]
    for e in range(3):
        epoch = [i for b in batches[2 * e: 2 * e + 2] for i in b]
        assert sorted(items[i].fact for i in epoch) == [0, 1, 2, 3]
    first = {items[i].fact: i for b in batches[:2] for i in b}
    second = {items[i].fact: i for b in batches[2:4] for i in b}
    assert all(first[f] != second[f] for f in first)  # another template in the next epoch


def _setup(model, tok, kl_on_answer=False):
    items = _items(tok)[:4]
    ref = inputs.ReferenceCache(model, items, tok.pad_token_id, kl_on_answer)
    probe = common.LinearProbe(model.config.hidden_size, len(FACTS))
    return items, ref, probe


def _step(model, items, ref_logp, alpha=0.5, kl_on_answer=False, pad=0, **benchmark) -> common.Step:
    return common.Step(items=items, ref_logp=ref_logp, alpha=alpha, probe_layer=model.config.num_hidden_layers - 1,
                       pad_id=pad, kl_on_answer=kl_on_answer, **benchmark)


def _losses(model, probe, items, ref, loss, weights, alpha=0.5, kl_on_answer=False, pad=0):
    """One step's terms of `loss` (a method's loss function) with `weights`."""
    return loss(model, probe, _step(model, items, [ref[i] for i in range(len(items))], alpha, kl_on_answer, pad), weights)


RLCP = rlcp.Weights(lambda_rag=1.0, lambda_adv=2.0, unlikelihood_weight=0.5, lambda_kl=5.0)


def test_loss_terms_have_the_signs_and_inputs_of_algorithm_1(tiny_model, tiny_tokenizer):
    items, ref, probe = _setup(tiny_model, tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    w = RLCP
    out = _losses(tiny_model, probe, items, ref, rlcp.rlcp_loss, w, pad=pad)
    # unlikelihood is minus half the no-context answer CE
    assert out["l_unlikelihood"].item() == pytest.approx(-0.5 * out["ce_no_context"].item(), rel=1e-6)
    # KL of the unchanged model to its own reference is zero; L_RAG is a positive CE
    assert out["l_kl"].item() == pytest.approx(0.0, abs=1e-5)
    assert out["l_rag"].item() > 0 and out["l_probe"].item() > 0
    expected = w.lambda_rag * out["l_rag"] + w.lambda_adv * out["l_probe"] + out["l_unlikelihood"] + w.lambda_kl * out["l_kl"]
    assert out["total"].item() == pytest.approx(expected.item(), rel=1e-5)
    # L_RAG reads x_rag: changing the evidence changes it, and leaves the x_no terms alone
    swapped = [dataclasses.replace(it, rag_ids=it.rag_ids[:3] + it.rag_ids[4:], rag_prompt_len=it.rag_prompt_len - 1)
               for it in items]
    out2 = _losses(tiny_model, probe, swapped, ref, rlcp.rlcp_loss, w, pad=pad)
    assert out2["l_rag"].item() != pytest.approx(out["l_rag"].item())
    assert out2["ce_no_context"].item() == pytest.approx(out["ce_no_context"].item(), rel=1e-5)
    # Just-RAG without the KL: L_RAG and the observer probe's own loss
    rag_only = _losses(tiny_model, probe, items, ref, just_rag.just_rag_loss, just_rag.Weights(1.0, 0.0), pad=pad)
    assert rag_only["total"].item() == pytest.approx(rag_only["l_rag"].item() + rag_only["l_probe"].item(), rel=1e-5)


def test_kl_is_positive_once_the_model_moves(tiny_model, tiny_tokenizer):
    model = copy.deepcopy(tiny_model)
    items, ref, probe = _setup(model, tiny_tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = _losses(model, probe, items, ref, just_rag.just_rag_loss, just_rag.Weights(0.0, 1.0), pad=tiny_tokenizer.pad_token_id)
    assert out["l_kl"].item() > 1e-4


def test_cached_reference_equals_running_the_reference(tiny_model, tiny_tokenizer):
    items, ref, _ = _setup(tiny_model, tiny_tokenizer, kl_on_answer=True)
    for i, it in enumerate(items):
        with torch.no_grad():
            logits = tiny_model(torch.tensor([it.no_ids])).logits[0]
        pos = list(inputs.kl_positions(it, True))
        torch.testing.assert_close(ref[i], torch.log_softmax(logits[pos], -1), atol=1e-5, rtol=1e-5)
        assert len(pos) == len(it.no_ids) - 1 and len(inputs.kl_positions(it, False)) == it.no_prompt_len - 1


def test_one_step_moves_the_adversary_loss_in_opposite_directions(tiny_model, tiny_tokenizer):
    """The probe descends L_P; through the GRL the backbone ascends it."""
    torch.manual_seed(0)
    model = copy.deepcopy(tiny_model)
    items, ref, probe = _setup(model, tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    w = rlcp.Weights(0.0, 1.0, 0.0, 0.0)  # the adversarial term alone

    def probe_loss():
        with torch.no_grad():
            return _losses(model, probe, items, ref, rlcp.rlcp_loss, w, alpha=1.0, pad=pad)["l_probe"].item()

    before = probe_loss()
    model.zero_grad()
    probe.zero_grad()
    _losses(model, probe, items, ref, rlcp.rlcp_loss, w, alpha=1.0, pad=pad)["total"].backward()
    with torch.no_grad():  # probe-only step
        for p in probe.parameters():
            p -= 0.5 * p.grad
    assert probe_loss() < before
    mid = probe_loss()
    with torch.no_grad():  # backbone-only step, with the reversed gradient it received
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    assert probe_loss() > mid


def test_observer_probe_does_not_touch_the_backbone(tiny_model, tiny_tokenizer):
    model = copy.deepcopy(tiny_model)
    items, ref, probe = _setup(model, tiny_tokenizer)
    out = _losses(model, probe, items, ref, just_rag.just_rag_loss, just_rag.Weights(0.0, 0.0), pad=tiny_tokenizer.pad_token_id)
    out["total"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())
    assert probe.linear.weight.grad.abs().sum() > 0


def test_train_arm_learns_rag_and_logs_every_step(tiny_model, tiny_tokenizer, tmp_path):
    import pandas as pd

    model = copy.deepcopy(tiny_model)
    items = _items(tiny_tokenizer)
    ref = inputs.ReferenceCache(model, items, tiny_tokenizer.pad_token_id, False)
    settings = loop.TrainSettings(epochs=6, batch_size=4, learning_rate=3e-3, probe_learning_rate=1e-2,
                                   probe_layer=2, kl_on_answer=False, max_grad_norm=1.0, seed=0)
    log = tmp_path / "log.csv"
    training = inputs.TrainingInputs(items, len(FACTS), tiny_tokenizer.pad_token_id, ref)
    probe = loop.train_arm(model, registry.method("rlcp"), RLCP, training, settings, log)
    frame = pd.read_csv(log)
    assert list(frame.columns) == loop.LOG_FIELDS and len(frame) == 6
    assert frame["alpha"].is_monotonic_increasing and frame["alpha"].iloc[0] == 0.0
    assert frame["l_rag"].iloc[-1] < frame["l_rag"].iloc[0]
    assert isinstance(probe, common.LinearProbe) and not model.training


def test_two_seeds_give_different_orders_and_the_same_seed_identical_losses(tiny_model, tiny_tokenizer):
    import pandas as pd

    items = _items(tiny_tokenizer)
    ref = inputs.ReferenceCache(tiny_model, items, tiny_tokenizer.pad_token_id, False)

    def run(seed):
        model = copy.deepcopy(tiny_model)
        settings = loop.TrainSettings(epochs=3, batch_size=2, learning_rate=3e-3, probe_learning_rate=1e-2,
                                       probe_layer=2, kl_on_answer=False, max_grad_norm=1.0, seed=seed)
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as d:
            loop.train_arm(model, registry.method("rlcp"), RLCP, inputs.TrainingInputs(items, len(FACTS), tiny_tokenizer.pad_token_id, ref),
                           settings, Path(d) / "log.csv")
            return pd.read_csv(Path(d) / "log.csv")

    a, again, b = run(0), run(0), run(1)
    assert loop.epoch_schedule(items, len(FACTS), 3, 2, 0) != loop.epoch_schedule(items, len(FACTS), 3, 2, 1)
    cols = ["total", "l_rag", "l_probe", "ce_no_context", "l_kl"]
    pd.testing.assert_frame_equal(a[cols], again[cols])
    assert not a[cols].equals(b[cols])


def test_rag_ce_on_answer_positions_equals_the_full_logits(tiny_model, tiny_tokenizer):
    items = _items(tiny_tokenizer)[:3]
    ids, mask = batching.right_pad([it.rag_ids for it in items], tiny_tokenizer.pad_token_id)
    pl, al = [it.rag_prompt_len for it in items], [it.answer_len for it in items]
    full = answers.answer_ce(tiny_model(input_ids=ids, attention_mask=mask).logits, ids, pl, al)
    torch.testing.assert_close(answers.answer_ce_only(tiny_model, ids, mask, pl, al), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kl_on_answer", [False, True])
def test_cached_reference_step_equals_the_naive_step(tiny_model, tiny_tokenizer, kl_on_answer):
    """Same losses and same gradients whether the reference's log-probs come from the cache or from running
    the frozen reference inside the step (the benchmark times both)."""
    reference = copy.deepcopy(tiny_model)
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():  # the model has moved away from the reference, so the KL is not zero
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    items, ref, probe = _setup(reference, tiny_tokenizer, kl_on_answer)
    pad = tiny_tokenizer.pad_token_id
    def step(ref_logp):
        model.zero_grad(), probe.zero_grad()
        out = rlcp.rlcp_loss(model, probe, _step(model, items, ref_logp, kl_on_answer=kl_on_answer, pad=pad), RLCP)
        out["total"].backward()
        return {k: v.detach().clone() for k, v in out.items()}, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    cached, g_cached = step([ref[i] for i in range(len(items))])
    naive, g_naive = step(inputs.reference_logp_now(reference, items, pad, kl_on_answer))
    assert cached["l_kl"] > 0
    for k in cached:
        torch.testing.assert_close(cached[k], naive[k], atol=1e-5, rtol=1e-5)
    assert len(g_cached) == len(g_naive) > 0
    for a, b in zip(g_cached, g_naive):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _chat_batch(tok, picks=(0, 8, 15, 27)):
    """Training items of different facts and templates in the chat format: rows that share the template's
    first tokens and then differ, with ragged lengths."""
    qs = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")
    es = facts.split_templates(facts.EVIDENCE_TEMPLATES, 2, "e")
    items = inputs.make_train_items(tok, FACTS, qs, es, "chat")
    return [items[i] for i in picks]


def test_common_prefix_stops_at_the_first_difference_and_leaves_every_row_a_token():
    head = list(range(100, 100 + batching.MIN_SHARED_PREFIX))  # rows that share at least the minimum

    def batch(rows, lengths):
        return (torch.tensor([head + r for r in rows]),
                torch.tensor([[1] * (len(head) + n) + [0] * (len(rows[0]) - n) for n in lengths]))

    assert batching.common_prefix_len(*batch([[5, 6, 7, 8, 0], [5, 6, 7, 9, 9], [5, 6, 7, 8, 1]], [4, 5, 5])) == len(head) + 3
    # identical rows: the last token stays with each row
    assert batching.common_prefix_len(*batch([[5, 6, 7], [5, 6, 7]], [3, 3])) == len(head) + 2
    # a row that ends inside the shared tokens
    assert batching.common_prefix_len(*batch([[5, 6, 0], [5, 6, 7]], [2, 3])) == len(head) + 1
    # fewer shared tokens than the minimum: no prefix pass
    short = torch.tensor([head[1:] + [1, 2], head[1:] + [3, 2]])
    assert batching.common_prefix_len(short, torch.ones_like(short)) == 0
    assert batching.common_prefix_len(torch.tensor([[1, 2], [3, 2]]), torch.ones(2, 2, dtype=torch.long)) == 0


@pytest.mark.parametrize("field", ["no_ids", "rag_ids"])
def test_shared_prefix_pass_gives_the_plain_pass(tiny_model, tiny_tokenizer, field):
    """The prefix run once with its cache broadcast to the rows: the same states at every layer and the same
    logits at every real position as one batched pass."""
    items = _chat_batch(tiny_tokenizer)
    ids, mask = batching.right_pad([getattr(it, field) for it in items], tiny_tokenizer.pad_token_id)
    shared = batching.SharedPrefixPass(tiny_model, ids, mask, output_hidden_states=True)
    assert shared.prefix_len >= 5  # the chat template's first turn at least
    with torch.no_grad():
        plain = tiny_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    assert len(shared.hidden_states) == len(plain.hidden_states)
    for a, b in zip(shared.hidden_states, plain.hidden_states):
        assert a.shape == b.shape
        torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared.logits()[real], plain.logits[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arm", ["rlcp", "selective_rlcp", "rmu"])
def test_training_step_with_the_shared_prefix_gives_the_same_losses_and_gradients(tiny_model, tiny_tokenizer, monkeypatch, arm):
    """Every term of a step and every parameter's gradient, with the shared prefix and without it (a common
    prefix of 0 sends SharedPrefixPass down the plain batched pass)."""
    items = _chat_batch(tiny_tokenizer)
    retain = _chat_batch(tiny_tokenizer, picks=(1, 9, 16, 26))
    pad = tiny_tokenizer.pad_token_id
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():  # away from the reference, so that the KL and RMU's retain term are not zero
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ref = inputs.ReferenceCache(tiny_model, items, pad, kl_on_answer=False)
    field = inputs.field_inputs(tiny_model, items, retain, pad, rmu_multiple=2.0)
    method = registry.method(arm)
    weights = method.weights(load_profile("default"))
    torch.manual_seed(0)
    probe = common.LinearProbe(model.config.hidden_size, len(FACTS))
    step_inputs = _step(model, items, [ref[i] for i in range(len(items))], pad=pad, retain=retain,
                        retain_ref_states=field.retain_ref_states, forget_ref_logp=torch.tensor(field.forget_ref_logp),
                        rmu_layer=field.rmu_layer,
                        rmu_target=field.rmu_coefficient * rmu.control_vector(tiny_model.config.hidden_size, 0))

    def step():
        model.zero_grad(), probe.zero_grad()
        out = method.loss(model, probe, step_inputs, weights)
        out["total"].backward()
        return {k: float(v.detach()) for k, v in out.items()}, [p.grad for p in model.parameters()]

    shared, g_shared = step()
    monkeypatch.setattr(batching, "common_prefix_len", lambda ids, mask: 0)
    plain, g_plain = step()
    assert shared.keys() == plain.keys() and shared["total"] != 0
    for k in shared:
        assert shared[k] == pytest.approx(plain[k], rel=1e-5, abs=1e-6), k
    assert [g is None for g in g_shared] == [g is None for g in g_plain]  # RMU's terms leave the final norm alone
    for a, b in zip(g_shared, g_plain):
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
