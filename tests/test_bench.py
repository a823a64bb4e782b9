"""The benchmark's pieces on tiny models: they time what they say they time and report from the run."""

import json

import pytest

from rlcp_utils.data import facts
from rlcp_utils.data import inputs
from rlcp_utils.study import bench

FACTS = [{"city": c, "country": k, "label": i} for i, (c, k) in
         enumerate([("Berlin", "Germany"), ("Paris", "France"), ("Tokyo", "Japan"), ("Lima", "Peru")])]


def _items(tok):
    qs = facts.split_templates(facts.QUESTION_TEMPLATES, 3, "q")
    es = facts.split_templates(facts.EVIDENCE_TEMPLATES, 2, "e")
    return inputs.make_train_items(tok, FACTS, qs, es, "plain")


def test_median_time_takes_the_median_of_the_timed_calls(monkeypatch):
    ticks = iter([0.0, 1.0, 1.0, 4.0, 4.0, 6.0])  # three timed calls lasting 1, 3 and 2 seconds
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
    calls = []
    assert bench._median_time(lambda: calls.append(1), repeats=3, warmup=1) == 2.0
    assert len(calls) == 4  # one warm-up call, untimed


def test_training_steps_times_four_variants_on_the_same_batch(tiny_model, tiny_tokenizer):
    import copy

    from rlcp_utils.core import batching

    lm = copy.deepcopy(tiny_model)
    items = _items(tiny_tokenizer)[:4]
    shared = batching.common_prefix_len
    r = bench.training_steps(lm, tiny_tokenizer, items, batch_size=2, repeats=1, layer=lm.config.num_hidden_layers - 1)
    assert r["plain_step_s"] > 0 and r["rlcp_step_s"] > 0 and r["naive_rlcp_step_s"] > 0 and r["unshared_rlcp_step_s"] > 0
    assert r["rlcp_over_plain"] == pytest.approx(r["rlcp_step_s"] / r["plain_step_s"])
    assert r["unshared_over_shared"] == pytest.approx(r["unshared_rlcp_step_s"] / r["rlcp_step_s"])
    assert batching.common_prefix_len is shared  # the unshared variant puts the prefix rule back
    assert r["tokens_per_step"] == sum(len(it.no_ids) + len(it.rag_ids) for it in items[:2])
    assert not lm.training  # left in eval mode


def test_pipeline_record_reads_the_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path))
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "manifest.json").write_text(json.dumps({"notebooks": {
        "01_data": {"wall_s": 120.0, "peak_rss_gib": 1.5}, "02_baselines": {"wall_s": 600.0, "peak_rss_gib": 3.0}}}))
    rec = bench.pipeline_record("default")
    assert rec["total_min"] == 12.0 and rec["peak_rss_gib"] == 3.0
    assert rec["notebooks"]["01_data"] == {"wall_min": 2.0, "peak_rss_gib": 1.5}


def test_bench_facts_are_distinct_and_labelled():
    facts = bench.bench_facts(12)
    assert [f["label"] for f in facts] == list(range(12)) and len({f["city"] for f in facts}) == 12


def test_bench_table_renders_every_target_from_the_numbers():
    r = {"training_step": {"rlcp_step_s": 3.6, "plain_step_s": 3.0, "naive_rlcp_step_s": 4.0, "rlcp_over_plain": 1.2,
                           "naive_over_cached": 1.11},
         "flops": {"achieved_train_gflops_plain_step": 95.0, "achieved_over_peak": 0.5}, "matmul": {"peak_gflops": 190.0},
         "generation": {"batch_size": 16, "batched_tokens_per_s": 92.0, "single_tokens_per_s": 20.0, "speedup": 4.6,
                        "generations_differing": 0, "prompts": 16},
         "model_load": {"dequantize_gguf_s": 13.0, "cached_s": 0.5, "speedup": 26.0}}
    table = bench.bench_table(r)
    assert "= 1.20" in table and "4.6x" in table and "26x" in table and table.count("\n") == 7
    r.update(commit="0123456789abcdef+dirty", machine={"cpu_count": 2, "cpu_bf16_flags": ["avx512_bf16"]})
    assert "commit 0123456789ab on 2 cores (CPU bf16 flags: avx512_bf16)" in bench.bench_table(r)  # what measured, said


def test_precision_comparison_sets_each_difference_against_the_seed_range(tmp_path, monkeypatch):
    from rlcp_utils.core import results
    from rlcp_utils.core.config import load_profile

    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path))
    key = "targets.rag_accuracy.heldout"
    row = lambda arm, seed, v: {"arm": arm, "seed": seed, "metric": key, "value": v,  # noqa: E731
                                "n_seeds": 0 if seed == "all" else 1}
    results.write(load_profile("default"), "03_rlcp_training",
                  [row("rlcp", "0", 0.82), row("rlcp", "1", 0.80), row("rlcp", "2", 0.86)])
    results.write(load_profile("default"), "01_data", [row("original", "all", 0.87)])
    results.write(load_profile("fp32-check"), "03_rlcp_training", [row("rlcp", "0", 0.64)])
    results.write(load_profile("fp32-check"), "01_data", [row("original", "all", 0.87)])
    table = bench.precision_comparison().set_index("arm")
    rlcp = table.loc["rlcp"]
    assert rlcp.bf16_minus_fp32 == pytest.approx(0.18) and rlcp.seed_range_bf16 == pytest.approx(0.06)
    assert not rlcp.within_seed_range  # 18 points apart, seeds 6 points apart
    assert table.loc["original"].bf16_minus_fp32 == 0 and table.loc["original"].within_seed_range is None


def test_precision_comparison_of_seed_means_uses_the_wider_seed_range(tmp_path, monkeypatch):
    from rlcp_utils.core import results
    from rlcp_utils.core.config import load_profile

    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path))
    key = "targets.rag_accuracy.heldout"
    row = lambda seed, v: {"arm": "rlcp", "seed": seed, "metric": key, "value": v, "n_seeds": 1}  # noqa: E731
    results.write(load_profile("default"), "03_rlcp_training", [row("0", 0.82), row("1", 0.80), row("2", 0.86)])
    results.write(load_profile("fp32-check"), "03_rlcp_training", [row("0", 0.64), row("1", 0.87), row("2", 0.89)])
    table = bench.precision_comparison()
    means = table[table.seed.str.startswith("mean")].iloc[0]
    assert means.fp32 == pytest.approx(0.80) and means.bf16 == pytest.approx(0.8266667)
    assert means.seed_range_fp32 == pytest.approx(0.25) and means.within_seed_range  # 2.7 points apart, fp32 seeds 25 apart
    first = table[table.seed == "0"].iloc[0]
    assert not first.within_seed_range  # the first seed alone: 18 points against a bf16 range of 6
