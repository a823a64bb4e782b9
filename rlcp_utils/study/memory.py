"""Memory: each notebook's own peak, and what the paper profile needs on a 16 GB GPU.

    python -m rlcp_utils.study.memory           # writes outputs/bench/memory.json (and measures the paper shape)

Per notebook, from the manifests: since each kernel records its own peak resident memory (core.notebook), the
manifest's `peak_rss_gib` of a notebook is that notebook's; older runs recorded the runner's largest kernel so far,
an upper bound, kept with its commit and marked as a bound.

The paper profile's Qwen2.5-0.5B-Instruct needs the hub, so its memory is measured on a random-initialised model of
the same shape (PAPER_SHAPE): one RLCP training step as the loop runs it (the trained model, the frozen reference,
AdamW, the probe, batch 4 of the study's prompts), fp32 on this CPU, in a fresh process so that its peak is its own;
the generation's KV cache at the paper profile's settings is computed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from rlcp_utils.core import config, model, outputs
from rlcp_utils.core.notebook import peak_rss_gib
from rlcp_utils.study import bench, staleness
from rlcp_utils.study.gpu import GIB, PAPER_SHAPE, PROMPT_TOKENS  # noqa: F401  (PAPER_SHAPE: also read by the tests)

CUDA_CONTEXT_GIB = 0.5
GPU_RECORD = config.REPO_ROOT / "outputs" / "bench" / "gpu.json"  # study.gpu, run on a lent GPU
# of a T4's 16 GB, about 15,100 MiB are usable with ECC on (a commonly reported figure, not measured here)
T4_USABLE_GIB = 14.7


def paper_shape_step(batch_size: int = 4, n_facts: int = 15) -> dict:
    """Peak resident memory and time of one RLCP step of a random-initialised model of the paper's shape (fp32, CPU):
    run this in a fresh process (see main) so the peak is the step's."""
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model("qwen2", **PAPER_SHAPE), dtype=torch.float32).eval()
    lm.rlcp_precision = "fp32"
    params = sum(p.numel() for p in lm.parameters())
    _, tok = model.load_model(precision="fp32")  # the offline tokenizer: its ids are valid in Qwen's larger vocabulary
    items = bench._items(tok, bench.bench_facts(n_facts))
    t0 = time.perf_counter()
    step = bench.training_steps(lm, tok, items, batch_size, repeats=1, layer=20, only=("rlcp_step_s",))
    return {"parameters": params, "step_s": round(step["rlcp_step_s"], 1), "tokens_per_step": step["tokens_per_step"],
            "host_peak_rss_gib": peak_rss_gib()["peak_rss_gib"], "wall_s": round(time.perf_counter() - t0, 1)}


def paper_profile_memory(step: dict, gpu: dict | None = None, profile: str = "paper") -> dict:
    """The paper profile on a GPU: the training state computed from the parameter count (fp32 weights of the trained
    model and the frozen reference, gradients, AdamW's two moments), next to the measured CPU peak of a step (which
    adds activations and the framework); the KV cache of batched greedy generation at the profile's settings.
    `gpu`: study.gpu's record (outputs/bench/gpu.json), measured on a GPU: its fp32 peaks (a T4's precision) decide
    whether the profile fits a 16 GB T4; without it, the CPU step's peak does."""
    P = config.load_profile(profile)
    n = step["parameters"]
    head_dim = PAPER_SHAPE["hidden_size"] // PAPER_SHAPE["num_attention_heads"]
    # GSM8K prompts with the chat template (PROMPT_TOKENS), then the replies to gsm8k_max_new_tokens
    kv_tokens = PROMPT_TOKENS + P["gsm8k_max_new_tokens"]
    kv = 2 * PAPER_SHAPE["num_hidden_layers"] * PAPER_SHAPE["num_key_value_heads"] * head_dim * kv_tokens * P["generation_batch_size"] * 4
    training_state = n * 4 * (1 + 1 + 1 + 2)  # weights, reference weights, gradients, AdamW moments; fp32
    out = {"training_state_gib": round(training_state / GIB, 2), "generation_kv_cache_gib": round(kv / GIB, 2),
           "generation_kv_assumes": f"batch {P['generation_batch_size']}, about {PROMPT_TOKENS} prompt + {P['gsm8k_max_new_tokens']} new tokens, fp32",
           "measured_cpu_step_peak_rss_gib": step["host_peak_rss_gib"]}
    # what the GPU must hold besides the tensors: its CUDA context (about 0.3-0.5 GiB)
    needed = step["host_peak_rss_gib"] + CUDA_CONTEXT_GIB
    if gpu is not None:
        fp32 = gpu["shapes"]["paper"]["by_precision"]["fp32"]
        peaks = {part: fp32[part]["peak_reserved_gib"] for part in ("training", "generation")}
        out["measured_on_gpu"] = {"gpu": gpu["gpu"], "commit": gpu["commit"], "precision": "fp32",
                                  **{f"{part}_peak_reserved_gib": v for part, v in peaks.items()}, "record": "outputs/bench/gpu.json"}
        needed = max(peaks.values()) + CUDA_CONTEXT_GIB
    out["fits_16_gb_t4"] = bool(needed < T4_USABLE_GIB)
    out["note"] = ("on a T4 (compute capability 7.5) precision auto is fp32; the fit adds the CUDA context "
                   f"({CUDA_CONTEXT_GIB} GiB) to the " + ("GPU's measured fp32 peaks" if gpu is not None else
                                                           "measured CPU step peak, which counts the training state and the activations")
                   + f" and compares with the {T4_USABLE_GIB} GiB a 16 GB T4 offers")
    return out


def notebook_peaks(extra_manifests: list[Path] = ()) -> list[dict]:
    """Every notebook's peak memory as a manifest records it, with how it was measured: the committed profiles'
    manifests (tracked by git; a local smoke run is not), then `extra_manifests` (runs made elsewhere, for example one notebook on the default profile in a
    scratch folder: only its runs that measured their own kernel; the row names that manifest's folder)."""
    rows = []
    committed = [config.REPO_ROOT / "outputs" / name / "manifest.json" for name in staleness.committed_profiles()]
    extra = [Path(p) for p in extra_manifests]
    for path in [*committed, *extra]:
        manifest = outputs.read_json(path, {}) or {}
        for name, entry in manifest.get("notebooks", {}).items():
            if entry.get("peak_rss_gib") is None or (path in extra and not entry.get("peak_rss_how")):
                continue  # from an extra manifest, only the runs that measured their own kernel
            if entry.get("run_mode") == "rerun":
                continue  # it reused cached analyses and trained jobs (loaded fewer models): the computing run's row stays
            own = bool(entry.get("peak_rss_how"))
            rows.append({"notebook": name, "profile": manifest.get("profile") or path.parent.name,
                         "manifest": str(path.relative_to(config.REPO_ROOT)) if path.is_relative_to(config.REPO_ROOT) else path.parent.name,
                         "peak_rss_gib": entry["peak_rss_gib"], "workers_peak_rss_gib": entry.get("workers_peak_rss_gib"),
                         "commit": entry.get("git_commit"), "status": entry.get("status"),
                         "how": entry["peak_rss_how"] if own else
                         "upper bound: the runner's largest finished kernel so far (getrusage RUSAGE_CHILDREN), before per-kernel records"})
    return rows


def kept_kernel_rows(before: list[dict], rows: list[dict]) -> list[dict]:
    """Earlier per-kernel measurements that `rows` does not measure again (a scratch run whose manifest is gone,
    for example on another machine): they stay, with their commit."""
    own = (outputs.PEAK_RSS_HOW, outputs.PEAK_RSS_HOW_BEFORE)
    measured = {(r["notebook"], r["profile"]) for r in rows if r["how"].startswith(own)}
    return [r for r in before if r.get("how", "").startswith(own) and (r["notebook"], r["profile"]) not in measured
            and r not in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step-only", action="store_true", help="(internal) print the paper-shape step's record as JSON")
    ap.add_argument("--manifest", action="append", default=[], type=Path,
                    help="also take the notebooks' peaks from this manifest (a run outside the committed outputs)")
    ap.add_argument("--notebooks-only", action="store_true",
                    help="update the notebooks' rows only; keep the recorded paper-shape step (it needs ~14 GiB)")
    args = ap.parse_args(argv)
    if args.step_only:
        print(json.dumps(paper_shape_step()))
        return 0
    path = config.REPO_ROOT / "outputs" / "bench" / "memory.json"
    before = outputs.read_json(path, {}) or {}
    rows = notebook_peaks(args.manifest)
    rows += kept_kernel_rows(before.get("notebooks", []), rows)
    if args.notebooks_only and "paper_shape_step" in before:
        step = before["paper_shape_step"]
    else:
        print("one RLCP step of a random-initialised model of Qwen2.5-0.5B's shape, fp32, in a fresh process ...", flush=True)
        run = subprocess.run([sys.executable, "-m", "rlcp_utils.study.memory", "--step-only"], capture_output=True, text=True, check=True)
        step = json.loads(run.stdout.strip().splitlines()[-1])
    # the machine of the paper-shape step (the notebooks' rows name their own commits and manifests)
    machine = before.get("machine") if args.notebooks_only and "paper_shape_step" in before else outputs.machine()
    record = {"commit": outputs.git_commit(), "machine": machine, "notebooks": rows,
              "paper_shape_step": step, "paper_profile_on_gpu": paper_profile_memory(step, outputs.read_json(GPU_RECORD, None))}
    outputs.write_json(path, record)
    print(json.dumps(record["paper_shape_step"]), json.dumps(record["paper_profile_on_gpu"]), sep="\n")
    print(f"written {path.relative_to(config.REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
