"""Shared fixtures: a tiny byte-level BPE tokenizer (trained here, no download) and tiny random-init
Llama and Qwen2 models, so unit tests exercise the real code paths in a fraction of a second."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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


# --- the smoke run: nbval over the 15 notebooks, started before the first test and read by tests/test_smoke.py ------
# A smoke run keeps about 1.4 of the 2 cores busy (user+sys over wall time of `make test`: 26.5 of 18.7 min; of the
# smoke pipeline alone: 15.9 of 11.2 min): imports, tokenising, single-threaded probes and generation loops. The other
# tests fill the idle core instead of waiting for it, and the checks of what the notebooks wrote run last.

SMOKE_CHECKS = "test_smoke.py"
SMOKE_TIMEOUT_S = 1500


@dataclass
class SmokeRun:
    root: Path
    process: subprocess.Popen
    log: Path
    deadline: float

    def finished(self) -> tuple[int, str]:
        """Wait for the nbval run; its exit status and what it printed."""
        try:
            code = self.process.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the smoke run took over {SMOKE_TIMEOUT_S} s (log: {self.log})")
        return code, self.log.read_text()


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name == SMOKE_CHECKS)  # stable: everything else keeps its order


@pytest.fixture(scope="session", autouse=True)
def smoke_run_started(request, tmp_path_factory):
    """Starts the smoke run in the background when any of its checks is selected (not under `-m "not smoke"`)."""
    if not any(item.path.name == SMOKE_CHECKS for item in request.session.items):
        yield None
        return
    from rlcp_utils.core import model
    from rlcp_utils.study import checked_outputs

    model.offline_model_dir()  # the fp32 cache, built once here before two processes could both build it
    root = tmp_path_factory.mktemp("smoke")
    prepared = checked_outputs.prepare(root / "prepared", "smoke")
    env = {**os.environ, "RLCP_OUTPUTS_DIR": str(root / "outputs"), "MPLBACKEND": "Agg",
           checked_outputs.EXECUTED_ENV: str(root / "executed")}
    log = root / "nbval.log"
    with log.open("w") as sink:
        process = subprocess.Popen(checked_outputs.nbval_command(prepared), cwd=root / "prepared", env=env,
                                   stdout=sink, stderr=subprocess.STDOUT, text=True)
    run = SmokeRun(root, process, log, time.monotonic() + SMOKE_TIMEOUT_S)
    yield run
    if process.poll() is None:  # the session stopped before the checks read it
        process.kill()
        process.wait()
