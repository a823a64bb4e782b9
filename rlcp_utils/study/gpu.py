"""The study on a GPU, measured: memory and time of an RLCP training step and of batched greedy generation.

    python -m rlcp_utils.study.gpu --commit <sha>     # on a machine with a CUDA GPU: outputs/bench/gpu.json and gpu.md
    python -m rlcp_utils.study.gpu --table-only       # anywhere: gpu.md again from gpu.json

What a Colab user needs to know before a run: does the default profile (SmolLM2-135M) or the paper profile
(Qwen2.5-0.5B) fit a 16 GB T4, in the precision `precision: auto` picks there (fp32: a T4 has no native bf16),
and how long a training job takes. The paper's model needs the hub, so both shapes are random-initialised here
(weights change neither memory nor time): the default shape from the offline model's config.json, the paper
shape from PAPER_SHAPE (memory.py measures the same shape on a CPU). For each shape and precision (fp32, and bf16 where the GPU runs it natively):

- training: loop.train_arm, the study's own loop, runs RLCP (the trained model, the frozen reference's cached
  log-probabilities, the probe, AdamW) on the default profile's 15 targets for a few epochs, batch 4; the
  GPU's peak allocated and reserved memory, the mean step time after the first epoch, and the step's
  FLOPs (torch.utils.flop_counter) are recorded;
- generation: evaluate.greedy_generate's call (left-padded batch, KV cache, autocast) at the profile's
  generation batch and reply length (GSM8K), with replies forced to full length, and its peak memory.

Times on a T4 are not measured (none is lent here): `t4_step_s_lower_bound` is the step's FLOPs at a T4's
fp32 peak (8.1 TFLOP/s, NVIDIA's datasheet), or the step time measured here when that is longer (a slower GPU
does not launch kernels faster): a bound, not a forecast.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from rlcp_utils.core import config, model, outputs
from rlcp_utils.core.batching import autocast, left_pad
from rlcp_utils.core.files import atomic_write_text
from rlcp_utils.data import facts
from rlcp_utils.data.inputs import training_inputs
from rlcp_utils.methods import registry
from rlcp_utils.training import loop

# Qwen/Qwen2.5-0.5B-Instruct's shape (its config.json on the hub)
PAPER_SHAPE = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                   num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768,
                   rope_theta=1000000.0)
GIB = 2**30
T4_FP32_FLOPS = 8.1e12  # NVIDIA T4 datasheet, single precision peak
PROMPT_TOKENS = 200  # GSM8K prompts with the chat template run to about this length (memory.paper_profile_memory)


def _gib(n_bytes: int) -> float:
    return round(n_bytes / GIB, 2)


def _shape(name: str, model_dir: Path) -> AutoConfig:
    if name == "paper":
        return AutoConfig.for_model("qwen2", **PAPER_SHAPE)
    return AutoConfig.from_pretrained(model_dir)


def _fresh_model(cfg, device) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).to(device).eval()


def training_step(cfg, tok, study, precision: str, profile, epochs: int, device) -> dict:
    """Peak GPU memory, mean step time (after the first epoch) and FLOPs of RLCP steps with the study's loop on
    `study`'s targets and templates."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    lm = _fresh_model(cfg, device)
    lm.rlcp_precision = precision
    reference = copy.deepcopy(lm)
    inputs = training_inputs(reference, tok, study.targets, study.questions, study.evidences, study.prompt_format,
                             kl_on_answer=False)
    del reference  # the loop reads the reference's cached log-probabilities, as a job does
    method = registry.method("rlcp")
    weights = method.weights(profile)
    settings = dataclasses.replace(loop.settings_from_params(profile, seed=0), epochs=epochs, kl_on_answer=False)
    parameters = sum(p.numel() for p in lm.parameters())
    tokens = sum(len(it.no_ids) + len(it.rag_ids) for it in inputs.items[:settings.batch_size])
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "train_log.csv"
        torch.cuda.synchronize(device)
        probe = loop.train_arm(lm, method, weights, inputs, settings, log, desc=f"{precision} steps")
        torch.cuda.synchronize(device)
        with open(log) as f:
            seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    first = len(seconds) // epochs  # the first epoch allocates and warms up: not timed
    step_s = (seconds[-1] - seconds[first - 1]) / (len(seconds) - first)  # the log's times are cumulative, 0.01 s
    peak = {"peak_allocated_gib": _gib(torch.cuda.max_memory_allocated(device)),
            "peak_reserved_gib": _gib(torch.cuda.max_memory_reserved(device))}
    flops = _step_flops(lm, probe, method, weights, inputs, settings)
    del lm, probe, inputs
    return {"parameters": parameters, **peak, "step_s": round(step_s, 4), "steps_timed": len(seconds) - first,
            "flops_per_step": flops, "tokens_per_step": tokens}


def _step_flops(lm, probe, method, weights, inputs, settings) -> int:
    """FLOPs of one training step (forward and backward) of the loop's first batch, counted by torch."""
    step = loop._StepBuilder(lm, method, inputs, settings)(0, list(range(settings.batch_size)), 0.5)
    attention = lm.config._attn_implementation
    lm.set_attn_implementation("eager")  # the counter cannot size CUDA's SDPA with grouped KV heads in bf16; same FLOPs
    lm.train()
    with FlopCounterMode(display=False) as counter:
        with autocast(lm):
            losses = method.loss(lm, probe, step, weights)
        losses["total"].backward()
    lm.zero_grad(set_to_none=True)
    lm.eval()
    lm.set_attn_implementation(attention)
    return int(counter.get_total_flops())


@torch.no_grad()
def generation(cfg, tok, precision: str, batch_size: int, max_new_tokens: int, device) -> dict:
    """Peak GPU memory and time of one batch of greedy replies at full length (as evaluate.greedy_generate runs it)."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    lm = _fresh_model(cfg, device)
    lm.rlcp_precision = precision
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(100, min(cfg.vocab_size, len(tok)), (batch_size, PROMPT_TOKENS), generator=g).tolist()
    ids, mask = left_pad(prompts, tok.pad_token_id)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    with autocast(lm):
        out = lm.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                          min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    new = out.shape[1] - ids.shape[1]
    del lm, out
    return {"batch": batch_size, "prompt_tokens": PROMPT_TOKENS, "new_tokens": int(new), "seconds": round(seconds, 2),
            "peak_allocated_gib": _gib(torch.cuda.max_memory_allocated(device)),
            "peak_reserved_gib": _gib(torch.cuda.max_memory_reserved(device))}


def measure(model_dir: Path, epochs: int) -> dict:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this measures the study on a GPU (run it on one)")
    device = torch.device("cuda")
    tok = AutoTokenizer.from_pretrained(model_dir)  # the offline tokenizer: its ids are valid in Qwen's larger vocabulary
    auto = model.resolve_precision("auto", "cuda")
    study = facts.load_study_data(config.load_profile("default"))  # the default profile's committed facts and templates
    major, minor = torch.cuda.get_device_capability(device)
    precisions = ["fp32"] + (["bf16"] if auto["precision"] == "bf16" else [])  # bf16 where resolve_precision calls it native
    record = {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}",
              "gpu_memory_gib": _gib(torch.cuda.get_device_properties(device).total_memory),
              "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
              "precision_auto": {k: auto[k] for k in ("precision", "reason")}, "shapes": {}}
    for shape in ["default", "paper"]:
        profile = config.load_profile(shape)
        cfg = _shape(shape, model_dir)
        entry = {"model": profile["model"], "layers": cfg.num_hidden_layers, "probe_layer": profile["probe_layer"],
                 "steps_per_job": steps_per_job(profile), "by_precision": {}}
        for precision in precisions:
            print(f"{shape} shape, {precision}: training steps ...", flush=True)
            train = training_step(cfg, tok, study, precision, profile, epochs, device)
            print(f"{shape} shape, {precision}: generation ...", flush=True)
            gen = generation(cfg, tok, precision, profile["generation_batch_size"], profile["gsm8k_max_new_tokens"], device)
            if precision == "fp32":
                train["t4_step_s_lower_bound"] = round(max(train["flops_per_step"] / T4_FP32_FLOPS, train["step_s"]), 4)
                train["t4_job_min_lower_bound"] = round(train["t4_step_s_lower_bound"] * entry["steps_per_job"] / 60, 2)
            entry["by_precision"][precision] = {"training": train, "generation": gen}
            print(json.dumps(entry["by_precision"][precision]), flush=True)
        record["shapes"][shape] = entry
    return record


def steps_per_job(profile, n_facts: int | None = None) -> int:
    """Optimizer steps of a training job on n_facts targets (default: the profile's): epochs x ceil(facts / batch),
    as loop.train_arm's schedule takes them."""
    n = profile["n_targets"] if n_facts is None else n_facts
    return profile["epochs"] * -(-n // profile["batch_size"])


def gpu_table(record: dict) -> str:
    """The record as the markdown table docs/performance.md links to (outputs/bench/gpu.md)."""
    lines = [f"Measured on one {record['gpu']} (compute capability {record['compute_capability']}; torch {record['torch']}, "
             f"transformers {record['transformers']}) by `{record['command'].split(' --out')[0]}`, code of commit "
             f"{record['commit'][:7]}; models random-initialised in each profile's shape. `precision: auto` there: "
             f"{record['precision_auto']['precision']} ({record['precision_auto']['reason']}); on a T4 (7.5): fp32.", "",
             "| profile (shape) | precision | RLCP step (s) | training peak, reserved (GiB) | generation | generation peak, "
             "reserved (GiB) | FLOPs per step | T4 lower bound per job (min) |", "|---|---|---|---|---|---|---|---|"]
    for shape, entry in record["shapes"].items():
        for precision, m in entry["by_precision"].items():
            t, g = m["training"], m["generation"]
            bound = t.get("t4_job_min_lower_bound")
            bound = "" if bound is None else f"{bound:.1f} ({entry['steps_per_job']} steps)"
            lines.append(f"| {shape} ({entry['model']}, {t['parameters'] / 1e6:.0f}M) | {precision} | {t['step_s']:.2f} "
                         f"(mean of {t['steps_timed']}) | {t['peak_reserved_gib']:.2f} | {g['batch']} x ({g['prompt_tokens']} + "
                         f"{g['new_tokens']}) tokens, {g['seconds']:.1f} s | {g['peak_reserved_gib']:.2f} | "
                         f"{t['flops_per_step'] / 1e9:.0f} G | {bound} |")
    lines += ["", "T4 lower bound: each step at least as long as here, and at least its FLOPs at a T4's fp32 peak "
              f"({record['t4_fp32_flops_assumed'] / 1e12:.1f} TFLOP/s); training only (scoring and generation come on top)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="folder with the offline model's config.json and tokenizer (default: the model cache)")
    ap.add_argument("--commit", help="the commit whose code runs (the GPU machine has no git history)")
    ap.add_argument("--table-only", action="store_true", help="write gpu.md from the recorded gpu.json; measure nothing")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of 4 steps; the first is not timed")
    ap.add_argument("--out", type=Path, default=config.REPO_ROOT / "outputs" / "bench" / "gpu.json")
    args = ap.parse_args(argv)
    if args.table_only:
        atomic_write_text(args.out.with_suffix(".md"), gpu_table(json.loads(args.out.read_text())))
        print(f"written {args.out.with_suffix('.md')}")
        return 0
    if not args.commit:
        ap.error("--commit is required to measure")
    t0 = time.time()
    record = {"commit": args.commit, "command": "python -m rlcp_utils.study.gpu " + " ".join(sys.argv[1:]),
              **measure(args.model_dir or model.offline_model_dir(), args.epochs),
              "t4_fp32_flops_assumed": T4_FP32_FLOPS, "wall_s": None}
    record["wall_s"] = round(time.time() - t0, 1)
    outputs.write_json(args.out, record)
    atomic_write_text(args.out.with_suffix(".md"), gpu_table(record))
    print(f"written {args.out} and its table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
