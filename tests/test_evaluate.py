import numpy as np
import pytest
import torch

from rlcp_utils.data import facts
from rlcp_utils.measures import evaluate


def _items(tok, n=6, fmt="plain"):
    six = [{"city": c, "country": k} for c, k in
           [("Berlin", "Germany"), ("Paris", "France"), ("Tokyo", "Japan"), ("Lima", "Peru"), ("Cairo", "Egypt"), ("Nairobi", "Kenya")]][:n]
    qs = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")[:3]
    return facts.build_items(tok, six, qs, fmt)


def test_logprob_matches_a_direct_computation(tiny_model, tiny_tokenizer):
    items = _items(tiny_tokenizer)
    s = evaluate.score_answers(tiny_model, [i["prompt_ids"] for i in items], [i["answer_ids"] for i in items], 4,
                               tiny_tokenizer.pad_token_id)
    it = items[3]
    ids = torch.tensor([it["prompt_ids"] + it["answer_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(ids).logits[0], -1)
    start = len(it["prompt_ids"])
    expected = sum(logp[start - 1 + k, t].item() for k, t in enumerate(it["answer_ids"]))
    assert s["answer_logprob"][3] == pytest.approx(expected, abs=1e-4)
    assert np.all(s["answer_prob"] <= 1) and np.all(s["answer_prob"] > 0)


@pytest.mark.parametrize("fmt", ["plain", "chat"])
def test_scores_do_not_depend_on_batching_or_padding(tiny_model, tiny_tokenizer, fmt):
    """One prompt per batch runs the plain pass; chat prompts in a batch share the template's first tokens,
    which run once (SharedPrefixPass): the same scores."""
    items = _items(tiny_tokenizer, fmt=fmt)
    if fmt == "chat":
        from rlcp_utils.core import batching

        ids, mask = batching.right_pad([i["prompt_ids"] + i["answer_ids"] for i in items], tiny_tokenizer.pad_token_id)
        assert batching.common_prefix_len(ids, mask) >= 5
    args = ([i["prompt_ids"] for i in items], [i["answer_ids"] for i in items])
    one = evaluate.score_answers(tiny_model, *args, 1, tiny_tokenizer.pad_token_id)
    many = evaluate.score_answers(tiny_model, *args, 7, tiny_tokenizer.pad_token_id)
    np.testing.assert_allclose(one["answer_logprob"], many["answer_logprob"], atol=1e-4)
    assert (one["greedy_correct"] == many["greedy_correct"]).all()


def _score_in_batches(model, items, order, batch_size, pad_id) -> np.ndarray:
    s = evaluate.score_answers(model, [items[i]["prompt_ids"] for i in order], [items[i]["answer_ids"] for i in order],
                               batch_size, pad_id)
    out = np.full(len(items), np.nan)
    out[order] = s["answer_logprob"]
    return out


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_of_real_width(request, tiny_tokenizer):
    """Two layers at the offline model's widths (hidden 576, MLP 1536, 9 heads, 3 key-value heads): at the tiny
    models' widths every matrix product is small enough to be batch-invariant anyway, at these it is not (without
    `row_invariant` this test fails on our CPUs: log-probabilities differ by up to 0.06 in bf16)."""
    from transformers import AutoModelForCausalLM

    from rlcp_utils.core.model import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(request.param, vocab_size=len(tiny_tokenizer), hidden_size=576, intermediate_size=1536,
                      num_hidden_layers=2, num_attention_heads=9, num_key_value_heads=3,
                      pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id)
    cfg._attn_implementation = "eager"
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("fmt", ["chat", "plain"])
def test_a_prompt_gets_the_same_score_in_any_batch(model_of_real_width, tiny_tokenizer, precision, fmt):
    """Bit for bit: other batch sizes, orders, companions and padding widths (plain and chat prompts mixed, so
    the shared prefix and the widths change between batches), in a model set to train in either precision."""
    model = model_of_real_width
    items = _items(tiny_tokenizer, fmt="chat") + _items(tiny_tokenizer, fmt=fmt)
    rng = np.random.default_rng(0)
    everything = np.arange(len(items))
    model.rlcp_precision = precision
    reference = _score_in_batches(model, items, everything, 64, tiny_tokenizer.pad_token_id)
    for batch_size in (1, 2, 3, 5, 16):
        order = rng.permutation(everything)[: rng.integers(4, len(items) + 1)]
        scores = _score_in_batches(model, items, order, batch_size, tiny_tokenizer.pad_token_id)
        assert np.array_equal(scores[order], reference[order]), (batch_size, np.abs(scores[order] - reference[order]).max())


def test_skipping_the_padding_changes_no_real_position(model_of_real_width, tiny_tokenizer):
    """padding_skipped: the linear layers compute only the real positions; every real position's hidden state is the
    same, bit for bit, as when the padding is computed too (with and without a shared prefix)."""
    from rlcp_utils.core import batching

    items = _items(tiny_tokenizer, fmt="chat") + _items(tiny_tokenizer, fmt="plain")
    model = model_of_real_width
    chat = _items(tiny_tokenizer, fmt="chat")
    for chosen, shared in ((items, False), (chat, True)):
        ids, mask = batching.right_pad([i["prompt_ids"] + i["answer_ids"] for i in chosen], tiny_tokenizer.pad_token_id, min_width=32)
        assert (batching.SharedPrefixPass.shared_len(ids, mask) > 0) == shared
        with torch.no_grad(), batching.row_invariant(model):
            plain = batching.SharedPrefixPass(model, ids, mask).last_hidden_state
            with batching.padding_skipped(model, mask[:, batching.SharedPrefixPass.shared_len(ids, mask):]):
                skipped = batching.SharedPrefixPass(model, ids, mask).last_hidden_state
        real = mask.bool()
        assert (mask == 0).any() and torch.equal(plain[real], skipped[real])
    with pytest.raises(RuntimeError, match="inside row_invariant"), batching.padding_skipped(model, mask):
        pass


def test_row_invariant_restores_the_model(tiny_model):
    """The context changes nothing once left: the layers' own forward and the model's precision come back."""
    from rlcp_utils.core import batching

    tiny_model.rlcp_precision = "bf16"
    try:
        with batching.row_invariant(tiny_model, rows=4):
            assert tiny_model.rlcp_precision == "fp32" and "forward" in vars(tiny_model.lm_head)
            x = torch.randn(7, tiny_model.config.hidden_size)
            np.testing.assert_allclose(tiny_model.lm_head(x).detach(), x @ tiny_model.lm_head.weight.T.detach(), atol=1e-5)
        assert tiny_model.rlcp_precision == "bf16" and "forward" not in vars(tiny_model.lm_head)
    finally:
        del tiny_model.rlcp_precision


def test_greedy_correct_agrees_with_greedy_generation(tiny_model, tiny_tokenizer):
    """Teacher-forced argmax check == generate() producing the answer. Use the model's own greedy output as
    the 'answer' for half the items so that both outcomes occur."""
    items = _items(tiny_tokenizer)
    prompts = [i["prompt_ids"] for i in items]
    answers = []
    for k, p in enumerate(prompts):
        with torch.no_grad():
            out = tiny_model.generate(torch.tensor([p]), max_new_tokens=2, do_sample=False,
                                      pad_token_id=tiny_tokenizer.pad_token_id)
        greedy = out[0, len(p):].tolist()
        answers.append(greedy if k % 2 == 0 else items[k]["answer_ids"])
    s = evaluate.score_answers(tiny_model, prompts, answers, 4, tiny_tokenizer.pad_token_id)
    for k, p in enumerate(prompts):
        with torch.no_grad():
            out = tiny_model.generate(torch.tensor([p]), max_new_tokens=len(answers[k]), do_sample=False,
                                      pad_token_id=tiny_tokenizer.pad_token_id)
        assert s["greedy_correct"][k] == (out[0, len(p):].tolist() == answers[k])
    assert s["greedy_correct"][::2].all()


def test_a_wrong_answer_is_produced_exactly_when_generation_produces_it(tiny_model, tiny_tokenizer):
    """wrong_answer_produced (chance's numerator) scores only the wrong answers that start with the model's first
    choice; it must say what generate() says for every one: here a third are the greedy continuation (produced), a
    third start like it and then differ (scored, not produced) and a third start otherwise (skipped, not produced)."""
    items = _items(tiny_tokenizer) * 2
    prompts = [i["prompt_ids"] for i in items]
    greedy = []
    for p in prompts:
        with torch.no_grad():
            out = tiny_model.generate(torch.tensor([p]), max_new_tokens=2, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
        greedy.append(out[0, len(p):].tolist())
    vocab = len(tiny_tokenizer)
    wrong = [g if k % 3 == 0 else [g[0], (g[1] + 1) % vocab] if k % 3 == 1 else [(g[0] + 1) % vocab, g[1]]
             for k, g in enumerate(greedy)]
    wrong_items = [{**i, "answer_ids": w} for i, w in zip(items, wrong)]
    right = evaluate.score_answers(tiny_model, prompts, [i["answer_ids"] for i in items], 4, tiny_tokenizer.pad_token_id)
    produced = evaluate.wrong_answer_produced(tiny_model, items, wrong_items, right["first_choice"], 4, tiny_tokenizer.pad_token_id)
    assert produced.tolist() == [w == g for w, g in zip(wrong, greedy)]
    assert produced[::3].all() and not produced[1::3].any() and not produced[2::3].any()
    with pytest.raises(ValueError, match="prompts"):
        evaluate.wrong_answer_produced(tiny_model, items, wrong_items[::-1], right["first_choice"], 4, tiny_tokenizer.pad_token_id)


def test_batched_generation_matches_one_at_a_time(tiny_model, tiny_tokenizer):
    items = _items(tiny_tokenizer, 4)
    prompts = [i["prompt_ids"] for i in items]
    batched = evaluate.greedy_generate(tiny_model, tiny_tokenizer, prompts, 4, batch_size=4)
    single = evaluate.greedy_generate(tiny_model, tiny_tokenizer, prompts, 4, batch_size=1)
    assert batched == single


def test_score_answers_rejects_mismatched_inputs(tiny_model):
    with pytest.raises(ValueError, match="same length"):
        evaluate.score_answers(tiny_model, [[1, 2]], [])


def test_bootstrap_interval():
    mean, lo, hi = evaluate.bootstrap_ci(np.ones(10), 500, 0)
    assert (mean, lo, hi) == (1.0, 1.0, 1.0)
    values = np.array([0, 1] * 50, dtype=float)
    mean, lo, hi = evaluate.bootstrap_ci(values, 2000, 0)
    assert mean == 0.5 and lo < 0.5 < hi
    assert hi - lo == pytest.approx(2 * 1.96 * 0.05, rel=0.2)  # binomial standard error at n=100
    with pytest.raises(ValueError):
        evaluate.bootstrap_ci(np.array([]), 10, 0)

