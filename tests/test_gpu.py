"""study/gpu.py's measurements, run on the CPU with torch.cuda's memory counters stubbed (no GPU in CI): which
steps are timed, that the FLOPs of a step do not depend on the precision, and that generation runs to full length."""

import json

import pytest
import torch

from rlcp_utils.core import config
from rlcp_utils.core.model import tiny_config
from rlcp_utils.data import facts
from rlcp_utils.study import gpu


@pytest.fixture
def no_gpu_counters(monkeypatch):
    for name in ("empty_cache", "reset_peak_memory_stats", "synchronize"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a: 4 * 2**30)


def test_a_training_measurement_times_the_steps_after_the_first_epoch(no_gpu_counters, tiny_tokenizer):
    cfg = tiny_config("qwen2", vocab_size=len(tiny_tokenizer), max_position_embeddings=1024)
    profile = config.load_profile("default")
    profile.params["probe_layer"] = cfg.num_hidden_layers - 1
    study = facts.load_study_data(profile)
    fp32 = gpu.training_step(cfg, tiny_tokenizer, study, "fp32", profile, epochs=2, device="cpu")
    steps_per_epoch = -(-profile["n_targets"] // profile["batch_size"])
    assert fp32["steps_timed"] == steps_per_epoch  # 2 epochs, the first not timed
    assert fp32["step_s"] > 0 and fp32["peak_reserved_gib"] == 4.0
    assert fp32["parameters"] == sum(p.numel() for p in gpu._fresh_model(cfg, "cpu").parameters())
    bf16 = gpu.training_step(cfg, tiny_tokenizer, study, "bf16", profile, epochs=2, device="cpu")
    assert bf16["flops_per_step"] == fp32["flops_per_step"] > 0  # autocast changes the arithmetic's type, not its count


def test_generation_is_measured_at_full_reply_length(no_gpu_counters, tiny_tokenizer):
    cfg = tiny_config("llama", vocab_size=len(tiny_tokenizer), max_position_embeddings=1024)
    out = gpu.generation(cfg, tiny_tokenizer, "fp32", batch_size=3, max_new_tokens=7, device="cpu")
    assert out["new_tokens"] == 7 and out["batch"] == 3 and out["peak_allocated_gib"] == 3.0


def test_steps_per_job_follow_the_profile():
    p = config.load_profile("default")
    assert gpu.steps_per_job(p) == p["epochs"] * 4  # 15 facts in batches of 4: 4 steps per epoch


def test_the_committed_gpu_record_has_a_row_per_shape_and_precision_and_a_t4_bound_in_fp32():
    record = json.loads((config.REPO_ROOT / "outputs" / "bench" / "gpu.json").read_text())
    rows = [line for line in gpu.gpu_table(record).splitlines() if line.startswith("| default") or line.startswith("| paper")]
    assert len(rows) == sum(len(e["by_precision"]) for e in record["shapes"].values())
    for shape in record["shapes"].values():
        fp32 = shape["by_precision"]["fp32"]["training"]
        # the bound is never shorter than the measured step, nor than the FLOPs at the T4's peak
        assert fp32["t4_step_s_lower_bound"] >= max(fp32["step_s"], fp32["flops_per_step"] / gpu.T4_FP32_FLOPS) - 1e-4
    assert (config.REPO_ROOT / "outputs" / "bench" / "gpu.md").read_text() == gpu.gpu_table(record)
