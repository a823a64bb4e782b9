"""Shared fixtures: a tiny byte-level BPE tokenizer (trained here, no download) and tiny random-init
Llama and Qwen2 models, so unit tests exercise the real code paths in a fraction of a second."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from rlcp_utils.data import facts
from rlcp_utils.core.model import tiny_config

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    corpus = facts.QUESTION_TEMPLATES + facts.EVIDENCE_TEMPLATES + [
        "Berlin Germany Paris France Tokyo Japan Lima Peru Nairobi Kenya Cairo Egypt", facts.CHAT_INSTRUCTION,
        facts.CHAT_CONTEXT_INSTRUCTION,
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def tiny_model(request, tiny_tokenizer):
    torch.manual_seed(0)
    cfg = tiny_config(request.param, vocab_size=len(tiny_tokenizer), pad_token_id=tiny_tokenizer.pad_token_id,
                      eos_token_id=tiny_tokenizer.eos_token_id)
    cfg._attn_implementation = "eager"
    return AutoModelForCausalLM.from_config(cfg).eval()
