"""The unlearning benchmark's pieces on hand-made numbers and tiny random models: the field's losses (NPO's
closed form, the bounded unlikelihood, RMU's distances), their signs inside the one loop, the relearning
folds, and the fluency measures."""

import copy
import dataclasses
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from rlcp_utils.core import answers, batching
from rlcp_utils.core.config import load_profile
from rlcp_utils.data import facts, inputs
from rlcp_utils.measures import unlearning
from rlcp_utils.methods import common, npo, registry, rmu, selective_rlcp
from rlcp_utils.training import jobs, loop

FACTS = [{"city": c, "country": k, "label": i} for i, (c, k) in
         enumerate([("Berlin", "Germany"), ("Paris", "France"), ("Tokyo", "Japan"), ("Lima", "Peru")])]
RETAIN = [{"city": c, "country": k} for c, k in [("Nairobi", "Kenya"), ("Cairo", "Egypt")]]


def _items(tok, fact_list=FACTS):
    qs = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")
    es = facts.split_templates(facts.EVIDENCE_TEMPLATES, 2, "e")
    return inputs.make_train_items(tok, fact_list, qs, es, "plain")


# --- the losses on hand-made numbers -------------------------------------------------------------------------


def test_npo_loss_equals_its_closed_form():
    logp = torch.tensor([-1.0, -4.0, -0.2])
    ref = torch.tensor([-1.0, -2.0, -3.0])
    beta = 0.1
    expected = sum((2 / beta) * math.log(1 + math.exp(beta * (a - b))) for a, b in zip(logp.tolist(), ref.tolist())) / 3
    assert npo.npo_loss(logp, ref, beta).item() == pytest.approx(expected, rel=1e-6)
    # at P_theta = P_ref it is (2/beta) log 2; open-unlearning's form -(2/beta) logsigmoid(-beta * ratio) agrees
    assert npo.npo_loss(ref, ref, beta).item() == pytest.approx(2 / beta * math.log(2), rel=1e-6)
    ou = (-2 / beta * torch.nn.functional.logsigmoid(-beta * (logp - ref))).mean()
    assert npo.npo_loss(logp, ref, beta).item() == pytest.approx(ou.item(), rel=1e-6)
    # minimising it lowers the answer's probability, and it vanishes as P_theta -> 0
    x = logp.clone().requires_grad_(True)
    npo.npo_loss(x, ref, beta).backward()
    assert (x.grad > 0).all()
    assert npo.npo_loss(torch.tensor([-1e4]), torch.tensor([-1.0]), beta).item() == pytest.approx(0.0, abs=1e-6)


def test_bounded_unlikelihood_is_minus_log_one_minus_p_and_vanishes():
    half = [torch.log(torch.tensor([0.5, 0.5]))]
    assert selective_rlcp.bounded_unlikelihood(half).item() == pytest.approx(math.log(2), rel=1e-6)
    mixed = [torch.log(torch.tensor([0.9])), torch.log(torch.tensor([0.2, 0.6]))]
    expected = (-math.log(0.1) + (-math.log(0.8) - math.log(0.4)) / 2) / 2
    assert selective_rlcp.bounded_unlikelihood(mixed).item() == pytest.approx(expected, rel=1e-5)
    assert selective_rlcp.bounded_unlikelihood([torch.tensor([-30.0])]).item() == pytest.approx(0.0, abs=1e-9)
    assert math.isfinite(selective_rlcp.bounded_unlikelihood([torch.tensor([0.0])]).item())  # p = 1 stays finite
    x = torch.log(torch.tensor([0.3, 0.7])).requires_grad_(True)
    selective_rlcp.bounded_unlikelihood([x]).backward()
    assert (x.grad > 0).all()  # descending it lowers log p


def test_rmu_distance_is_zero_at_the_target_and_ignores_masked_positions():
    target = torch.tensor([3.0, 0.0, 4.0])
    h = torch.stack([torch.stack([torch.tensor([9.0, 9.0, 9.0]), target, target])])  # [1, 3, 3]
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    assert rmu.masked_state_mse(h, target.expand_as(h), mask).item() == 0.0
    h2 = h.clone()
    h2[0, 2] = torch.tensor([3.0, 3.0, 4.0])
    assert rmu.masked_state_mse(h2, target.expand_as(h), mask).item() == pytest.approx(9 / 3 / 2)


def test_control_vector_is_a_seeded_unit_vector():
    u, again, other = rmu.control_vector(16, 0), rmu.control_vector(16, 0), rmu.control_vector(16, 1)
    assert u.norm().item() == pytest.approx(1.0) and (u >= 0).all()
    assert torch.equal(u, again) and not torch.equal(u, other)
    assert inputs.rmu_layer_of(32) == 8 and inputs.rmu_layer_of(30) == 8  # output of block 7


# --- the terms inside the loop, on tiny models -------------------------------------------------------------------


def _field(model, tok, items):
    retain_items = _items(tok, RETAIN)
    return inputs.field_inputs(model, items, retain_items, tok.pad_token_id, rmu_multiple=2.0)


def _step(model, tok, items, field, arm, weights, seed=0):
    """One step's terms of a benchmark arm on the first four items and the first two retain items."""
    probe = common.LinearProbe(model.config.hidden_size, len(FACTS))
    batch_idx, r_idx = [0, 1, 2, 3], [0, 1]
    step = common.Step(items=[items[i] for i in batch_idx], ref_logp=[], alpha=0.5, probe_layer=1, pad_id=tok.pad_token_id,
                       kl_on_answer=False, retain=[field.retain_items[i] for i in r_idx],
                       retain_ref_states=[field.retain_ref_states[i] for i in r_idx],
                       forget_ref_logp=torch.tensor([field.forget_ref_logp[i] for i in batch_idx]), rmu_layer=field.rmu_layer,
                       rmu_target=field.rmu_coefficient * rmu.control_vector(model.config.hidden_size, seed))
    return registry.method(arm).loss(model, probe, step, weights)


def test_field_terms_have_the_signs_and_inputs_of_their_definitions(tiny_model, tiny_tokenizer):
    p = load_profile("default")
    items = _items(tiny_tokenizer)
    field = _field(tiny_model, tiny_tokenizer, items)
    with torch.no_grad():
        gd = _step(tiny_model, tiny_tokenizer, items, field, "grad_diff", registry.method("grad_diff").weights(p))
        npo_terms = _step(tiny_model, tiny_tokenizer, items, field, "npo", registry.method("npo").weights(p))
        rmu_terms = _step(tiny_model, tiny_tokenizer, items, field, "rmu", registry.method("rmu").weights(p))
        # (the KL term needs the reference cache: tested in test_train; left out of this step)
        sel = _step(tiny_model, tiny_tokenizer, items, field, "selective_rlcp",
                    dataclasses.replace(registry.method("selective_rlcp").weights(p), lambda_kl=0.0))
    probe_term = gd["l_probe"]  # observer probe: its CE is in the total, with no gradient to the model
    # GradDiff: -CE(forget) + CE(retain)
    assert gd["total"].item() == pytest.approx((-gd["ce_no_context"] + gd["l_retain"] + probe_term).item(), rel=1e-5)
    assert gd["l_retain"].item() > 0
    # NPO of the unchanged model against its own reference: (2/beta) log 2, plus the retain CE
    assert npo_terms["l_unlikelihood"].item() == pytest.approx(2 / p["npo_beta"] * math.log(2), rel=1e-3)
    # RMU: the retain distance is zero for the unchanged model; the forget distance is positive
    assert rmu_terms["l_rmu_retain"].item() == pytest.approx(0.0, abs=1e-6) and rmu_terms["l_rmu"].item() > 0
    assert rmu_terms["total"].item() == pytest.approx((rmu_terms["l_rmu"] + rmu_terms["l_probe"]).item(), rel=1e-5)
    # selective RLCP: the bounded term replaces -0.5 CE; every RLCP term stays
    assert 0 < sel["l_unlikelihood"].item() and sel["l_rag"].item() > 0
    expected = sel["l_rag"] + 2 * sel["l_probe"] + sel["l_unlikelihood"] + sel["l_retain"] * p["retain_weight"]
    assert sel["total"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_rmu_forget_term_is_zero_when_the_states_sit_at_the_target(tiny_model, tiny_tokenizer):
    items = _items(tiny_tokenizer)[:1]
    field = _field(tiny_model, tiny_tokenizer, items)
    it = items[0]
    ids = torch.tensor([it.no_ids])
    with torch.no_grad():
        h = tiny_model(input_ids=ids, output_hidden_states=True).hidden_states[field.rmu_layer]
    # every masked position at the same vector: make the target that vector and the loss is zero
    flat = h.clone()
    flat[0, it.city_pos:] = h[0, -1]
    mask = rmu.from_city_mask(items, h.shape[1], h.device)
    assert rmu.masked_state_mse(flat, h[0, -1].expand_as(h), mask).item() == 0.0
    assert mask[0, : it.city_pos].sum() == 0 and mask[0, it.city_pos:].sum() == len(it.no_ids) - it.city_pos


def test_city_position_is_the_citys_last_token(tiny_tokenizer):
    for it, (fact, q) in zip(_items(tiny_tokenizer), [(f, q) for f in FACTS for q in range(7)]):
        upto = tiny_tokenizer.decode(it.no_ids[: it.city_pos + 1])
        assert upto.endswith(fact["city"])


@pytest.mark.parametrize("arm", ["selective_rlcp", "grad_diff", "npo", "rmu"])
def test_benchmark_arms_train_through_the_one_loop(tiny_model, tiny_tokenizer, tmp_path, arm):
    p = load_profile("default")
    model = copy.deepcopy(tiny_model)
    items = _items(tiny_tokenizer)
    field = _field(model, tiny_tokenizer, items)
    ref = inputs.ReferenceCache(model, items, tiny_tokenizer.pad_token_id, False)
    settings = loop.TrainSettings(epochs=2, batch_size=2, learning_rate=3e-3, probe_learning_rate=1e-2, probe_layer=2,
                                   kl_on_answer=False, max_grad_norm=1.0, seed=0)
    method = registry.method(arm)
    loop.train_arm(model, method, method.weights(p), inputs.TrainingInputs(items, len(FACTS), tiny_tokenizer.pad_token_id, ref, field),
                   settings, tmp_path / "log.csv")
    log = pd.read_csv(tmp_path / "log.csv")
    assert list(log.columns) == loop.LOG_FIELDS + loop.FIELD_LOG_FIELDS and len(log) == 4
    if arm in ("grad_diff", "npo", "selective_rlcp"):
        assert (log.l_retain > 0).all()
    if arm == "rmu":
        assert (log.l_rmu > 0).all() and log.l_rmu_retain.iloc[0] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="FieldInputs"):
        loop.train_arm(model, method, method.weights(p), inputs.TrainingInputs(items, len(FACTS), tiny_tokenizer.pad_token_id, ref),
                       settings)


# --- relearning, retain split, fluency, keys -----------------------------------------------------------------------


@pytest.mark.parametrize("n_facts,n_folds", [(15, 3), (7, 3), (3, 3), (4, 2)])
def test_relearning_never_fine_tunes_on_a_held_out_fact(tiny_tokenizer, n_facts, n_folds):
    folds = unlearning.relearn_folds(n_facts, n_folds, seed=0)
    assert sorted(f for fold in folds for f in fold) == list(range(n_facts))  # a partition
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    items = [SimpleNamespace(fact=f) for f in range(n_facts) for _ in range(3)]
    for fold in folds:
        tuned_on = {it.fact for it in unlearning.relearn_items(items, fold)}
        assert not tuned_on & set(fold) and tuned_on | set(fold) == set(range(n_facts))
    with pytest.raises(ValueError):
        unlearning.relearn_folds(2, 3, 0)


def test_relearn_fine_tunes_a_copy_and_evaluates_each_budget(tiny_model, tiny_tokenizer):
    items = _items(tiny_tokenizer)
    before = [p.clone() for p in tiny_model.parameters()]
    seen = []

    def evaluate(m):
        seen.append(m is not tiny_model)
        ids, mask = batching.right_pad([it.no_ids for it in items], tiny_tokenizer.pad_token_id)
        with torch.no_grad():
            return answers.answer_ce_only(m, ids, mask, [it.no_prompt_len for it in items], [it.answer_len for it in items]).item()

    out = unlearning.relearn(tiny_model, items, [0, 3, 8], evaluate, tiny_tokenizer.pad_token_id, 3e-3, 4, seed=0)
    assert list(out) == [0, 3, 8] and all(seen)
    assert out[8] < out[0]  # fine-tuning on the answers lowers their CE
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_model.parameters()))


def test_retain_split_is_disjoint_and_complete():
    retain = [{"city": f"c{i}", "country": f"k{i}"} for i in range(7)]
    a, b = facts.split_retain(retain)
    assert len(a) == 4 and len(b) == 3 and not {r["city"] for r in a} & {r["city"] for r in b}
    assert sorted(r["city"] for r in a + b) == sorted(r["city"] for r in retain)


def test_fluency_measures_on_hand_made_answers():
    pattern = unlearning.country_pattern(["France", "Niger", "Nigeria", "Côte d'Ivoire", "United States"])
    assert unlearning.names_a_country(" France.", pattern)
    assert unlearning.names_a_country("the United States of America", pattern)
    assert unlearning.names_a_country("Cote d'Ivoire", pattern)  # accents folded
    assert unlearning.names_a_country("It is in nigeria", pattern)
    assert not unlearning.names_a_country("Frankfurt", pattern) and not unlearning.names_a_country("Nigerian food", pattern)
    assert not unlearning.names_a_country("** ** **", pattern)
    assert unlearning.is_degenerate("** ** **") and unlearning.is_degenerate("") and unlearning.is_degenerate("... 1 2")
    assert unlearning.is_degenerate("the the the the") and unlearning.is_degenerate("Peru Peru Peru Peru is")
    assert not unlearning.is_degenerate(" France.") and not unlearning.is_degenerate("It is in the north of Peru")


def test_country_names_come_from_geonames():
    names = facts.country_names()
    assert len(names) > 200 and "France" in names and "Peru" in names


def test_benchmark_job_keys_follow_their_own_weights_and_leave_the_papers_alone():
    study = SimpleNamespace(targets=FACTS, retain=RETAIN * 2, questions=[], evidences=[], prompt_format="chat", draw=0)
    p = load_profile("smoke", {"precision": "fp32"})
    beta = load_profile("smoke", {"precision": "fp32", "npo_beta": 0.5})
    assert jobs.job_key(p, "npo", 0, study) != jobs.job_key(beta, "npo", 0, study)
    assert jobs.job_key(p, "rlcp", 0, study) == jobs.job_key(beta, "rlcp", 0, study)
    steps = load_profile("smoke", {"precision": "fp32", "relearn_steps": [0, 5]})  # an attack setting: analysis only
    assert jobs.job_key(p, "npo", 0, study) == jobs.job_key(steps, "npo", 0, study)
    assert registry.method("npo").notebook == "08_unlearning" and registry.method("rlcp").notebook == "03_rlcp_training"


def test_answer_only_logits_give_the_terms_of_the_full_pass(tiny_model, tiny_tokenizer):
    """Arms without the KL project onto the vocabulary only where the answer is predicted: same numbers."""
    items = [_items(tiny_tokenizer)[i] for i in (0, 8, 15, 27)]  # different facts and templates: ragged lengths
    step = common.Step(items=items, ref_logp=[], alpha=0.0, probe_layer=1, pad_id=tiny_tokenizer.pad_token_id, kl_on_answer=False)
    full = common.no_context_pass(tiny_model, step, full_logits=True)
    part = common.no_context_pass(tiny_model, step, full_logits=False)
    als = [it.answer_len for it in items]
    torch.testing.assert_close(answers.answer_ce(part.logits, part.ids, part.prompt_lens, als),
                               answers.answer_ce(full.logits, full.ids, full.prompt_lens, als), atol=1e-5, rtol=1e-5)
    for a, b in zip(answers.answer_token_logp(part.logits, part.ids, part.prompt_lens, als),
                    answers.answer_token_logp(full.logits, full.ids, full.prompt_lens, als)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(part.hidden_states, full.hidden_states))
