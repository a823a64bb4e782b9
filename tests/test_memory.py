"""outputs/bench/memory.json's parts: the paper profile's memory from its parameter count, and each notebook's peak as
its manifest records it (its own, or an older run's bound, marked as one)."""

import json

import pytest

from rlcp_utils.core.config import REPO_ROOT
from rlcp_utils.core import outputs
from rlcp_utils.study import memory


def test_the_paper_profile_on_a_gpu_is_computed_from_its_shape():
    n = 494_032_768  # Qwen2.5-0.5B's parameter count (tied embeddings)
    out = memory.paper_profile_memory({"parameters": n, "host_peak_rss_gib": 9.5})
    # fp32 weights of the trained and the frozen model, gradients, AdamW's two moments: 5 x 4 bytes per parameter
    assert out["training_state_gib"] == pytest.approx(n * 20 / 2**30, abs=0.01)
    # greedy generation at the paper profile (batch 64, 512 new tokens): keys and values of 24 layers, 2 KV heads of 64
    assert out["generation_kv_cache_gib"] == pytest.approx(2 * 24 * 2 * 64 * (200 + 512) * 64 * 4 / 2**30, abs=0.01)
    assert out["fits_16_gb_t4"] and not memory.paper_profile_memory({"parameters": n, "host_peak_rss_gib": 15.0})["fits_16_gb_t4"]


def test_a_gpu_measurement_decides_the_t4_fit_over_the_cpu_step():
    step = {"parameters": 494_032_768, "host_peak_rss_gib": 9.5}
    def gpu(training, generation):
        parts = {"training": {"peak_reserved_gib": training}, "generation": {"peak_reserved_gib": generation}}
        return {"gpu": "G", "commit": "c", "shapes": {"paper": {"by_precision": {"fp32": parts, "bf16": {}}}}}
    fits = memory.paper_profile_memory(step, gpu(10.5, 4.3))
    assert fits["fits_16_gb_t4"] and fits["measured_on_gpu"]["training_peak_reserved_gib"] == 10.5
    # the larger of the two fp32 peaks plus the CUDA context must stay under what a T4 offers
    assert not memory.paper_profile_memory(step, gpu(4.0, memory.T4_USABLE_GIB - 0.2))["fits_16_gb_t4"]


def test_the_paper_shape_has_qwen_05b_parameters():
    from transformers import AutoConfig

    cfg = AutoConfig.for_model("qwen2", **memory.PAPER_SHAPE)
    h, i, layers, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    kv = cfg.num_key_value_heads * h // cfg.num_attention_heads
    per_layer = h * h + h + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h  # q (with bias), k, v (with bias), o, MLP, 2 norms
    assert v * h + layers * per_layer + h == 494_032_768  # the hub's count for Qwen2.5-0.5B


def test_notebook_peaks_say_how_each_was_measured():
    rows = memory.notebook_peaks()
    manifest = json.loads((REPO_ROOT / "outputs" / "default" / "manifest.json").read_text())
    recorded = {nb for nb, e in manifest["notebooks"].items() if e.get("peak_rss_gib") is not None and e.get("run_mode") != "rerun"}
    assert {r["notebook"] for r in rows if r["profile"] == "default"} == recorded
    for r in rows:
        entry = json.loads((REPO_ROOT / "outputs" / r["profile"] / "manifest.json").read_text())["notebooks"][r["notebook"]]
        assert r["peak_rss_gib"] == entry["peak_rss_gib"]
        assert r["how"].startswith("upper bound") != bool(entry.get("peak_rss_how"))


def test_a_rerun_entry_is_not_taken_for_the_computing_runs_peak(tmp_path):
    """A --rerun reuses jobs and cached analyses: its peak is not the notebook's; the recorded row stays instead."""
    path = tmp_path / "elsewhere" / "manifest.json"
    path.parent.mkdir()
    entry = {"peak_rss_gib": 3.0, "workers_peak_rss_gib": 0.0, "peak_rss_how": outputs.PEAK_RSS_HOW, "git_commit": "abc"}
    path.write_text(json.dumps({"profile": "elsewhere", "notebooks": {
        "04_probing": {**entry, "run_mode": "normal"}, "09_relearning": {**entry, "peak_rss_gib": 0.5, "run_mode": "rerun"}}}))
    mine = [r for r in memory.notebook_peaks([path]) if r["profile"] == "elsewhere"]
    assert [(r["notebook"], r["peak_rss_gib"]) for r in mine] == [("04_probing", 3.0)]
    before = [{"how": outputs.PEAK_RSS_HOW, "profile": "elsewhere", "notebook": "09_relearning", "peak_rss_gib": 6.0}]
    assert memory.kept_kernel_rows(before, mine) == before  # the computing run's row of 09 is kept


def test_earlier_kernel_measurements_stay_unless_measured_again():
    kernel = {"how": outputs.PEAK_RSS_HOW, "profile": "default"}
    before = [{**kernel, "notebook": "12_gradient_geometry", "peak_rss_gib": 8.8, "manifest": "default"},
              {**kernel, "notebook": "11_kl_verbosity", "peak_rss_gib": 7.0, "manifest": "default"},
              {"how": "upper bound: ...", "profile": "default", "notebook": "02_baselines", "peak_rss_gib": 6.1, "manifest": "x"}]
    now = [{**kernel, "notebook": "11_kl_verbosity", "peak_rss_gib": 6.5, "manifest": "default"}]
    kept = memory.kept_kernel_rows(before, now)
    assert [r["notebook"] for r in kept] == ["12_gradient_geometry"]  # 11 measured again; bounds are not carried over



def test_a_worker_that_ended_inside_a_cell_still_counts_and_only_its_own_memory(tmp_path):
    """A kernel whose workers exit before the cell ends (training jobs of the local executor) records their peak, and
    only theirs: a fresh process that holds about 400 MiB itself starts a worker holding about 300 MiB (under a shell,
    as submitit's controller holds a job) that ends before the figure is read, then a worker holding nothing."""
    import json
    import subprocess
    import sys

    worker = tmp_path / "worker.py"
    worker.write_text("import time\nb = bytearray(300 * 2**20)\nb[::4096] = b'x' * len(b[::4096])\ntime.sleep(1.5)\n")
    kernel = tmp_path / "kernel.py"
    kernel.write_text(
        "import json, subprocess, sys\n"
        "from rlcp_utils.core.notebook import WorkerPeak, peak_rss_gib\n"
        "own = bytearray(400 * 2**20); own[::4096] = b'x' * len(own[::4096])\n"
        "sampler = WorkerPeak(every_s=0.1)\n"
        f"subprocess.run(['sh', '-c', sys.executable + ' {worker}'], check=True)\n"
        "after_worker = sampler.gib(); sampler.stop()\n"
        "quiet = WorkerPeak(every_s=0.1)\n"
        "subprocess.run(['sleep', '0.5'], check=True)\n"
        "print(json.dumps({'after_worker': after_worker, 'idle_worker': quiet.gib(), 'now': peak_rss_gib()}))\n")
    out = json.loads(subprocess.run([sys.executable, str(kernel)], capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert 0.28 <= out["after_worker"] < 0.45, out  # the ended worker's own 300 MiB, not the parent's 400
    assert out["idle_worker"] < 0.05, out  # a worker that holds nothing adds nothing, whatever its parent holds
    assert out["now"]["workers_peak_rss_gib"] == 0 and out["now"]["peak_rss_gib"] >= 0.39


def test_a_child_forked_but_not_yet_execd_adds_nothing(tmp_path):
    """Between fork and exec a child's VmHWM is its parent's resident memory (shared copy-on-write, already in the
    parent's own peak): a sample in that window must not add it to the workers' figure. The window made deterministic:
    a fork that never execs, beside one that execs a program holding about 300 MiB."""
    import json
    import subprocess
    import sys

    kernel = tmp_path / "kernel.py"
    kernel.write_text(
        "import json, os, subprocess, sys, time\n"
        "from rlcp_utils.core.notebook import peak_rss_gib\n"
        "own = bytearray(400 * 2**20); own[::4096] = b'x' * len(own[::4096])\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(3); os._exit(0)\n"
        "time.sleep(0.5)\n"
        "forked = peak_rss_gib()['workers_peak_rss_gib']\n"
        "worker = subprocess.Popen([sys.executable, '-c', \"b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
        "import time; time.sleep(2)\"])\n"
        "time.sleep(1.2)\n"
        "both = peak_rss_gib()['workers_peak_rss_gib']\n"
        "worker.wait(); os.waitpid(pid, 0)\n"
        "print(json.dumps({'forked': forked, 'both': both}))\n")
    out = json.loads(subprocess.run([sys.executable, str(kernel)], capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert out["forked"] < 0.05, out  # the fork that runs the parent's program holds the parent's pages: not a worker's
    assert 0.28 <= out["both"] < 0.45, out  # the exec'd worker's own 300 MiB counts, the fork still not
