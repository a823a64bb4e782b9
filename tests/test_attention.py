"""Attention measures: entropy on hand-computed distributions, token spans, prediction-step attention on
tiny random models (checked against an unpadded forward)."""

import math

import numpy as np
import pytest
import torch

from rlcp_utils.data import facts
from rlcp_utils.measures import attention


def test_entropy_on_hand_computed_distributions():
    assert attention.attention_entropy([1.0, 0.0, 0.0]) == pytest.approx(0.0)
    assert attention.attention_entropy([0.25] * 4) == pytest.approx(math.log(4))
    assert attention.attention_entropy([0.5, 0.5]) == pytest.approx(math.log(2))
    # -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1) = 0.8018 nats
    assert attention.attention_entropy([0.7, 0.2, 0.1]) == pytest.approx(0.80182, abs=1e-4)
    # a sub-distribution is renormalised: [0.35, 0.1, 0.05] is the same shape as [0.7, 0.2, 0.1]
    assert attention.attention_entropy([0.35, 0.1, 0.05]) == pytest.approx(0.80182, abs=1e-4)
    batch = attention.attention_entropy(np.array([[1.0, 0.0], [0.5, 0.5]]), axis=-1)
    np.testing.assert_allclose(batch, [0.0, math.log(2)])


def test_token_span_covers_a_multi_token_name(tiny_tokenizer):
    ev = facts.evidence(facts.EVIDENCE_TEMPLATES[0], "Johannesburg", "South Africa")
    text = facts.render(tiny_tokenizer, "Johannesburg is in the country of", "chat", ev)
    span = attention.token_span(tiny_tokenizer, text, "South Africa")
    ids = facts.encode_prompt(tiny_tokenizer, text, "chat")
    assert len(span) >= 2 and span == list(range(span[0], span[-1] + 1))
    assert tiny_tokenizer.decode([ids[i] for i in span]).strip() == "South Africa"
    with pytest.raises(ValueError, match="does not occur"):
        attention.token_span(tiny_tokenizer, text, "Peru")


def test_prediction_attention_is_a_distribution_and_ignores_padding(tiny_model):
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]
    att = attention.prediction_attention(tiny_model, prompts, batch_size=2)
    cfg = tiny_model.config
    for p, a in zip(prompts, att):
        assert a.shape == (cfg.num_hidden_layers, cfg.num_attention_heads, len(p))
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
        with torch.no_grad():
            ref = tiny_model(torch.tensor([p]), output_attentions=True).attentions
        np.testing.assert_allclose(a, torch.stack([r[0, :, -1] for r in ref]).numpy(), atol=1e-5)
