"""Benchmark: where the study's time goes on this machine, measured side by side in one run.

    python -m rlcp_utils.study.bench            # what `make bench` calls; writes outputs/bench/bench.json

1. An RLCP training step (all four terms, cached reference) against a plain fine-tuning step on the same
   tokens (CE on x_no and x_rag), and against the naive RLCP step that runs the frozen reference each step.
2. Achieved training FLOP/s (6 x parameters x tokens / step time) against a dense matmul measured here.
3. GSM8K generation: batched greedy decoding with a KV cache against one prompt at a time; generations
   that differ token for token are counted.
4. Model load: cached fp32 safetensors against dequantizing the GGUF.
5. Cost growth: step time against prompt length, evaluation time against the number of facts.
6. The pipeline: wall time and peak memory per notebook, from the default profile's manifest.
Also the settings the study runs with (threads, dtype, attention), each against its alternative.
Every number comes from this run; nothing is a constant.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from rlcp_utils.core import answers, batching, config, outputs, results
from rlcp_utils.core import model as model_mod
from rlcp_utils.data import facts, inputs
from rlcp_utils.measures import evaluate, gsm8k
from rlcp_utils.methods import common, rlcp
from rlcp_utils.study import claims, gpu
from rlcp_utils.training import loop


def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_facts(n: int) -> list[dict]:
    """n facts from the candidate pool (no screening: timing does not depend on what the model knows)."""
    pool = facts.candidate_pool(80, 4)
    return [{"city": c["city"], "country": c["country"], "label": i} for i, c in enumerate(pool[:n])]


def _items(tok, fact_list, prompt_format="chat", evidence_repeat: int = 1):
    qs = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")
    es = facts.split_templates(facts.EVIDENCE_TEMPLATES, 2, "e")
    items = inputs.make_train_items(tok, fact_list, qs, es, prompt_format)
    if evidence_repeat > 1:  # longer x_rag prompts for the cost-growth curve: the context repeated
        for it in items:
            prompt = it.rag_ids[:it.rag_prompt_len]
            head = prompt[: len(prompt) // 2]
            it.rag_ids = head * (evidence_repeat - 1) + it.rag_ids
            it.rag_prompt_len += len(head) * (evidence_repeat - 1)
    return items


def training_steps(lm, tok, items, batch_size: int, repeats: int, layer: int,
                   only: tuple[str, ...] = ("plain_step_s", "rlcp_step_s", "naive_rlcp_step_s", "unshared_rlcp_step_s")) -> dict:
    """Median seconds of one optimizer step for: plain fine-tuning (CE on the x_no and x_rag answers), RLCP with
    the cached reference, naive RLCP (the frozen model run every step), and RLCP without the shared prefix
    (or only some of them). Like is compared with like: every variant runs in the model's precision
    (`lm.rlcp_precision`) inside one autocast region, and all but the 'unshared' one share the prefix."""
    pad = tok.pad_token_id
    batch = items[:batch_size]
    reference = copy.deepcopy(lm).eval()
    ref = inputs.ReferenceCache(reference, batch, pad, kl_on_answer=False)
    probe = common.LinearProbe(lm.config.hidden_size, max(it.label for it in items) + 1)
    opt = loop.make_optimizer(lm, probe, 1e-9, 1e-9)  # the training loop's optimizer; tiny rates: timing, not learning
    weights = rlcp.Weights(lambda_rag=1.0, lambda_adv=2.0, unlikelihood_weight=0.5, lambda_kl=5.0)
    lm.train()

    def plain_step(share_prefix: bool = True):
        def step():
            with batching.autocast(lm), _prefix_sharing(share_prefix):
                no, no_mask = batching.right_pad([it.no_ids for it in batch], pad, "cpu")
                rag, rag_mask = batching.right_pad([it.rag_ids for it in batch], pad, "cpu")
                answer_lens = [it.answer_len for it in batch]
                loss = answers.answer_ce_only(lm, no, no_mask, [it.no_prompt_len for it in batch], answer_lens) \
                    + answers.answer_ce_only(lm, rag, rag_mask, [it.rag_prompt_len for it in batch], answer_lens)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def rlcp_step(ref_logp_fn, share_prefix: bool = True):
        def step():
            # as loop.train_arm runs it: one autocast region for the forward passes
            with batching.autocast(lm), _prefix_sharing(share_prefix):
                step_inputs = common.Step(items=batch, ref_logp=ref_logp_fn(), alpha=0.5, probe_layer=layer, pad_id=pad,
                                          kl_on_answer=False)
                out = rlcp.rlcp_loss(lm, probe, step_inputs, weights)
            opt.zero_grad(set_to_none=True)
            out["total"].backward()
            opt.step()
        return step

    variants = {"plain_step_s": plain_step(),
                "rlcp_step_s": rlcp_step(lambda: [ref[i] for i in range(len(batch))]),
                "naive_rlcp_step_s": rlcp_step(lambda: inputs.reference_logp_now(reference, batch, pad, False)),
                "unshared_rlcp_step_s": rlcp_step(lambda: [ref[i] for i in range(len(batch))], share_prefix=False)}
    variants = {name: fn for name, fn in variants.items() if name in only}
    times = {name: [] for name in variants}
    for fn in variants.values():  # warm-up: first calls allocate
        fn()
    for _ in range(repeats):  # interleaved, so a slow spell of the machine hits every variant alike
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    res = {name: statistics.median(t) for name, t in times.items()}
    lm.eval()
    res["precision"] = getattr(lm, "rlcp_precision", "fp32")
    res["tokens_per_step"] = sum(len(it.no_ids) + len(it.rag_ids) for it in batch)
    if {"plain_step_s", "rlcp_step_s", "naive_rlcp_step_s"} <= set(res):
        res["rlcp_over_plain"] = res["rlcp_step_s"] / res["plain_step_s"]
        res["naive_over_cached"] = res["naive_rlcp_step_s"] / res["rlcp_step_s"]
    if "unshared_rlcp_step_s" in res:
        res["unshared_over_shared"] = res["unshared_rlcp_step_s"] / res["rlcp_step_s"]
    return res


@contextlib.contextmanager
def _prefix_sharing(on: bool):
    """Off: batching.SharedPrefixPass finds no common prefix and runs the plain batched pass (the alternative timed)."""
    if on:
        yield
        return
    shared = batching.common_prefix_len
    batching.common_prefix_len = lambda ids, mask: 0
    try:
        yield
    finally:
        batching.common_prefix_len = shared


def matmul_peak(hidden: int, intermediate: int, tokens: int, repeats: int = 5) -> dict:
    """Dense fp32 matmul throughput on shapes like the model's MLP ([tokens, hidden] x [hidden, intermediate]),
    and a larger square one; the best is this machine's practical peak."""
    out = {}
    for name, (m, k, n) in {"mlp_shape": (tokens, hidden, intermediate), "square_2048": (2048, 2048, 2048)}.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        s = _median_time(lambda: a @ b, repeats, warmup=2)
        out[f"{name}_gflops"] = 2 * m * k * n / s / 1e9
    out["peak_gflops"] = max(out.values())
    return out


def generation(lm, tok, n_prompts: int, batch_size: int, max_new_tokens: int, seed: int) -> dict:
    """Batched greedy decoding (left padding, KV cache) against one prompt at a time, same prompts."""
    problems = gsm8k.sample_problems(gsm8k.load_problems(), n_prompts, seed)
    ids = [tok(gsm8k.build_prompt(tok, p["question"]), add_special_tokens=False).input_ids for p in problems]
    t0 = time.perf_counter()
    batched = evaluate.greedy_generate(lm, tok, ids, max_new_tokens, batch_size)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = evaluate.greedy_generate(lm, tok, ids, max_new_tokens, 1)
    t_single = time.perf_counter() - t0
    n_tokens = sum(len(tok(t, add_special_tokens=False).input_ids) for t in single)
    differ = [i for i, (a, b) in enumerate(zip(batched, single)) if a != b]
    first_diff = None
    if differ:
        a, b = batched[differ[0]], single[differ[0]]
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        first_diff = {"prompt": differ[0], "char": k, "batched": a[max(0, k - 40): k + 40], "single": b[max(0, k - 40): k + 40]}
    return {"prompts": n_prompts, "batch_size": batch_size, "max_new_tokens": max_new_tokens, "generated_tokens": n_tokens,
            "batched_s": t_batched, "single_s": t_single, "batched_tokens_per_s": n_tokens / t_batched,
            "single_tokens_per_s": n_tokens / t_single, "speedup": t_single / t_batched,
            "generations_differing": len(differ), "first_difference": first_diff}


def model_load(repeats: int = 2) -> dict:
    """Both paths after one untimed warm-up load (which pays the one-off imports of transformers' model
    classes, several seconds, that neither path should be charged with)."""
    cached = _median_time(lambda: model_mod.load_model(config.OFFLINE_MODEL, device="cpu"), repeats, warmup=1)
    gguf = _median_time(lambda: model_mod._dequantize(model_mod.gguf_path()), 1, warmup=0)
    return {"cached_s": cached, "dequantize_gguf_s": gguf, "speedup": gguf / cached}


def growth(lm, tok, batch_size: int, layer: int, repeats: int) -> dict:
    """Step time against prompt length (context repeated 1, 2, 4 times) and evaluation forward time against
    the number of facts (5, 15, 45, each under the 10 question templates)."""
    steps = []
    for rep in (1, 2, 4):
        items = _items(tok, bench_facts(batch_size), evidence_repeat=rep)
        r = training_steps(lm, tok, items, batch_size, repeats, layer, only=("rlcp_step_s",))
        steps.append({"context_repeat": rep, "tokens_per_step": r["tokens_per_step"], "rlcp_step_s": r["rlcp_step_s"]})
    evals = []
    qs = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")
    for n in (5, 15, 45):
        its = facts.build_items(tok, bench_facts(n), qs, "chat")
        t0 = time.perf_counter()
        evaluate.score_answers(lm, [i["prompt_ids"] for i in its], [i["answer_ids"] for i in its], 64, tok.pad_token_id)
        evals.append({"facts": n, "prompts": len(its), "score_s": time.perf_counter() - t0})
    return {"step_vs_length": steps, "eval_vs_facts": evals}


def growth_figure(g: dict, out_dir: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = [r["tokens_per_step"] for r in g["step_vs_length"]]
    axes[0].plot(x, [r["rlcp_step_s"] for r in g["step_vs_length"]], "o-")
    axes[0].set(xlabel="tokens per step (batch of x_no + x_rag)", ylabel="RLCP step (s)", ylim=(0, None), xlim=(0, None))
    x = [r["prompts"] for r in g["eval_vs_facts"]]
    axes[1].plot(x, [r["score_s"] for r in g["eval_vs_facts"]], "o-")
    axes[1].set(xlabel="prompts scored (facts x 10 templates)", ylabel="scoring time (s)", ylim=(0, None), xlim=(0, None))
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "cost_growth.png", dpi=120)
    plt.close(fig)


# bench.json's settings keys of the RLCP step in the default precision (fp32) and under bf16 autocast (cost.py reads both)
STEP_DEFAULT_KEY, STEP_BF16_KEY = "rlcp_step_s_default", "rlcp_step_s_bf16_autocast"


def settings_alternatives(lm, tok, items, batch_size: int, layer: int, repeats: int) -> dict:
    """The choices the study runs with, each timed against its alternative on the RLCP step."""
    out = {"threads_default": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    base = training_steps(lm, tok, items, batch_size, repeats, layer, only=("rlcp_step_s",))["rlcp_step_s"]
    out[STEP_DEFAULT_KEY] = base
    default_threads = torch.get_num_threads()
    if default_threads > 1:
        torch.set_num_threads(1)
        out["rlcp_step_s_1_thread"] = training_steps(lm, tok, items, batch_size, repeats, layer, only=("rlcp_step_s",))["rlcp_step_s"]
        torch.set_num_threads(default_threads)
    sdpa, _ = model_mod.load_model(config.OFFLINE_MODEL, device="cpu", attn_implementation="sdpa")
    out["rlcp_step_s_sdpa"] = training_steps(sdpa, tok, items, batch_size, repeats, layer, only=("rlcp_step_s",))["rlcp_step_s"]
    del sdpa
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out[STEP_BF16_KEY] = training_steps(lm, tok, items, batch_size, repeats, layer, only=("rlcp_step_s",))["rlcp_step_s"]
    return out


def pipeline_record(profile: str = "default") -> dict:
    manifest = outputs.read_json(config.outputs_root() / profile / "manifest.json", {}) or {}
    nbs = manifest.get("notebooks", {})
    return {"profile": profile, "notebooks": {k: {"wall_min": round(v["wall_s"] / 60, 2), "peak_rss_gib": v.get("peak_rss_gib")}
                                               for k, v in nbs.items()},
            "total_min": round(sum(v["wall_s"] for v in nbs.values()) / 60, 1),
            "peak_rss_gib": max((v.get("peak_rss_gib") or 0 for v in nbs.values()), default=None) or None,
            "machine": manifest.get("machine")}


def bench_table(r: dict) -> str:
    """The README's performance table, rendered from bench.json (never typed by hand)."""
    t, f, g, ld = r["training_step"], r["flops"], r["generation"], r["model_load"]
    st, pipe = r.get("settings", {}), r.get("pipeline", {})
    rows = [(f"RLCP step ÷ plain fine-tuning step (same tokens, passes and precision: {step.get('precision', 'fp32')})",
             f"{step['rlcp_step_s']:.2f} s ÷ {step['plain_step_s']:.2f} s = {step['rlcp_over_plain']:.2f}", "≤ 1.3")
            for step in [t, r.get("training_step_bf16")] if step]
    rows += [
        ("naive RLCP step (reference run every step) ÷ ours", f"{t['naive_rlcp_step_s']:.2f} s ÷ {t['rlcp_step_s']:.2f} s = "
         f"{t['naive_over_cached']:.2f}", "> 1"),
    ]
    if "unshared_rlcp_step_s" in t:
        rows.append(("RLCP step, every row's prompt run in full ÷ shared prompt prefix run once", f"{t['unshared_rlcp_step_s']:.2f} s ÷ "
                     f"{t['rlcp_step_s']:.2f} s = {t['unshared_over_shared']:.2f}", "> 1"))
    rows += [
        ("training FLOP/s ÷ measured matmul peak", f"{f['achieved_train_gflops_plain_step']:.0f} ÷ "
         f"{r['matmul']['peak_gflops']:.0f} GFLOP/s = {f['achieved_over_peak']:.2f}", "≥ 0.5"),
        (f"GSM8K generation, batch {g['batch_size']} ÷ one at a time", f"{g['batched_tokens_per_s']:.0f} ÷ "
         f"{g['single_tokens_per_s']:.0f} tokens/s = {g['speedup']:.1f}x; {g['generations_differing']} of {g['prompts']} differ",
         "≥ 4x"),
        ("model load: dequantize GGUF ÷ cached fp32", f"{ld['dequantize_gguf_s']:.1f} s ÷ {ld['cached_s']:.2f} s = "
         f"{ld['speedup']:.0f}x", "≥ 10x"),
    ]
    if st:
        rows.append(("RLCP step: default threads / 1 thread / sdpa / bf16 autocast",
                     " / ".join(f"{st[k]:.2f} s" for k in [STEP_DEFAULT_KEY, "rlcp_step_s_1_thread", "rlcp_step_s_sdpa",
                                                          STEP_BF16_KEY] if k in st), "choose the fastest"))
    if pipe.get("notebooks"):
        rows.append(("`make reproduce` (default): sum of each notebook's last recorded run (a rerun that reused trained "
                     "arms or generations records its shorter time)", f"{pipe['total_min']} min; peak RSS "
                     f"{pipe['peak_rss_gib']} GiB (over the notebooks that recorded it)", "≤ 45 min, ≤ 6 GiB"))
    lines = ["| measure | this machine | target |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if "commit" in r:
        m = r.get("machine", {})
        lines += ["", f"Measured by commit {(r['commit'] or 'unknown')[:12]} on {m.get('cpu_count')} cores "
                      f"(CPU bf16 flags: {', '.join(m.get('cpu_bf16_flags') or []) or 'none'})."]
    return "\n".join(lines) + "\n"


def precision_comparison(bf16_profile: str = "default", fp32_profile: str = "fp32-check") -> pd.DataFrame:
    """Table 1 of RLCP, first training seed, in the two precisions, next to the spread of the training seeds:
    bf16 autocast is acceptable where it moves a number less than retraining with another seed does.
    Both profiles must have run (fp32-check: `python -m rlcp_utils.study.pipeline --profile fp32-check`, which runs
    01_data and 03_rlcp_training); the original model's rows show what bf16 does to evaluation alone."""
    rows = []
    a, b = (results.load(config.load_profile(name)).query(f"fact_draw == '{results.STUDY_DRAW}'")  # the study's facts
            for name in (bf16_profile, fp32_profile))
    seed0 = str(config.load_profile(bf16_profile)["seeds"][0])
    for arm, seed in [("original", "all"), ("rlcp", seed0)]:
        for key in claims.TABLE1_ROWS:
            pick = lambda df: df[(df.arm == arm) & (df.seed == seed) & (df.metric == key)].value  # noqa: E731
            v_bf16, v_fp32 = pick(a), pick(b)
            if v_bf16.empty or v_fp32.empty:
                continue
            seeds = results.seed_range(a, arm, key)
            spread = seeds[1] - seeds[0] if seeds else float("nan")
            diff = float(v_bf16.iloc[0] - v_fp32.iloc[0])
            rows.append({"arm": arm, "seed": seed, "metric": key, "fp32": float(v_fp32.iloc[0]), "bf16": float(v_bf16.iloc[0]),
                         "bf16_minus_fp32": diff, "seed_range_bf16": spread,
                         "within_seed_range": bool(abs(diff) <= spread) if seeds else None})
    # with several seeds in both precisions: the mean over the seeds each has, against the wider of the two seed
    # ranges (one seed may be an outlier of its own precision, which the first-seed row alone cannot tell)
    for key in claims.TABLE1_ROWS:
        per_seed = lambda df: df[(df.arm == "rlcp") & (df.seed != "all") & (df.metric == key)].value.astype(float)  # noqa: E731
        v_bf16, v_fp32 = per_seed(a), per_seed(b)
        if len(v_bf16) < 2 or len(v_fp32) < 2:
            continue
        spread = max(v_bf16.max() - v_bf16.min(), v_fp32.max() - v_fp32.min())
        diff = float(v_bf16.mean() - v_fp32.mean())
        rows.append({"arm": "rlcp", "seed": f"mean of {len(v_fp32)} (fp32), {len(v_bf16)} (bf16)", "metric": key, "fp32": float(v_fp32.mean()),
                     "bf16": float(v_bf16.mean()), "bf16_minus_fp32": diff, "seed_range_bf16": float(v_bf16.max() - v_bf16.min()),
                     "seed_range_fp32": float(v_fp32.max() - v_fp32.min()), "within_seed_range": bool(abs(diff) <= spread)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement (median reported)")
    ap.add_argument("--gen-prompts", type=int, default=16, help="GSM8K prompts for the generation benchmark")
    ap.add_argument("--gen-tokens", type=int, default=64, help="new tokens per prompt in the generation benchmark")
    ap.add_argument("--out", default=None, help="output folder (default outputs/bench)")
    ap.add_argument("--precision", action="store_true",
                    help="only compare the default profile (bf16 where native) with the fp32-check profile")
    args = ap.parse_args(argv)
    P = config.load_profile("default")
    out_dir = Path(args.out) if args.out else config.outputs_root() / "bench"
    if args.precision:
        table = precision_comparison()
        outputs.write_table_to(out_dir / "precision.csv", table)
        outputs.atomic_write_text(out_dir / "precision.md", outputs.markdown_table(table.round(3).set_index(["arm", "seed", "metric"])))
        print(table.round(3).to_string())
        return 0
    t_start = time.time()
    # the code that measured (HEAD, '+dirty' when tracked code differs) and the CPU's bf16 support (it sets the step times)
    result = {"commit": outputs.git_commit(),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                          "device": "cpu", "python": sys.version.split()[0], "cpu_bf16_flags": model_mod.cpu_bf16_flags()}}

    def stage(name, fn):
        t0 = time.time()
        print(f"[bench] {name} ...", flush=True)
        result[name] = fn()
        print(f"[bench] {name}: {time.time() - t0:.0f} s", flush=True)
        outputs.write_json(out_dir / "bench.json", result)  # partial results survive an interruption

    stage("model_load", model_load)
    lm, tok = model_mod.load_model(config.OFFLINE_MODEL, device="cpu")
    n_params = sum(p.numel() for p in lm.parameters())
    items = _items(tok, bench_facts(P["batch_size"]))
    stage("training_step", lambda: training_steps(lm, tok, items, P["batch_size"], args.repeats, P["probe_layer"]))
    if model_mod.cpu_bf16_flags():  # the same variants in bf16 autocast, where this CPU runs it natively
        lm.rlcp_precision = "bf16"
        stage("training_step_bf16", lambda: training_steps(lm, tok, items, P["batch_size"], args.repeats, P["probe_layer"]))
        lm.rlcp_precision = "fp32"
    stage("matmul", lambda: matmul_peak(lm.config.hidden_size, lm.config.intermediate_size,
                                        result["training_step"]["tokens_per_step"]))
    step = result["training_step"]
    achieved = 6 * n_params * step["tokens_per_step"] / step["plain_step_s"] / 1e9
    result["flops"] = {"parameters": n_params, "achieved_train_gflops_plain_step": achieved,
                       "achieved_over_peak": achieved / result["matmul"]["peak_gflops"]}
    stage("generation", lambda: generation(lm, tok, args.gen_prompts, P["generation_batch_size"], args.gen_tokens, P["seed"]))
    stage("growth", lambda: growth(lm, tok, P["batch_size"], P["probe_layer"], max(1, args.repeats - 1)))
    base_step = result["growth"]["step_vs_length"][0]["rlcp_step_s"]
    result["growth"]["projected_rlcp_training_min_vs_facts"] = {  # steps x measured step time, default epochs/batch
        n: round(gpu.steps_per_job(P, n) * base_step / 60, 1) for n in (5, 15, 45)}
    growth_figure(result["growth"], out_dir)
    stage("settings", lambda: settings_alternatives(lm, tok, items, P["batch_size"], P["probe_layer"], max(1, args.repeats - 1)))
    result["pipeline"] = pipeline_record("default")
    result["bench_wall_s"] = time.time() - t_start
    outputs.write_json(out_dir / "bench.json", result)
    outputs.atomic_write_text(out_dir / "bench.md", bench_table(result))
    if out_dir == config.REPO_ROOT / "outputs" / "bench":
        outputs.update_readme_table(config.REPO_ROOT / outputs.README_TABLES["bench"][2], bench_table(result), "bench")
    print(f"[bench] done in {result['bench_wall_s'] / 60:.1f} min: {out_dir / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
