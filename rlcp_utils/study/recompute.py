"""Every number recomputable: summary rows of the results record recomputed from the committed per-prompt rows
they come from, by formulas written here independently of the code that produced them.

    python -m rlcp_utils.study.recompute --profile default     # prints each notebook's rows, recorded vs recomputed

What is recomputed (the value; intervals need the bootstrap's random draws and are not):
- scores of trained arms (02, 03, 08, 11, 13, 14: the record rows of an arm that has job folders, on the fact sets
  and conditions its jobs scored): per-prompt rows of jobs/<arm>/<folder>/per_item.csv; a fact's score is the mean
  over its prompts, a seed's the mean over facts, an arm's the mean over seeds (per draw), and over draws the mean of
  the draws' means;
- 08's and 13's rows on subsets of those facts (retain_train.*, retain_heldout.*, shared_targets.*): the same rows
  (01's for the original), the subsets read from data/ (the rule: even / odd positions of retain.jsonl, 13's first
  targets of targets.jsonl);
- the original (01): tables/per_item_original.csv, the same formula per draw and over draws;
- GSM8K (07): tables/07_gsm8k_scored.csv, the mean over problems, and the paired difference to the original;
- relearning and quantization (09): analyses/09_relearning/<arm>.csv, each fact's recall after each budget (its
  held-out fold); <arm>_quantized.csv, each fact's score in each format;
- unlearning checks (10): analyses/10_unlearning_checks/{fluency,country_probe}_<arm>.csv;
- collapse (05): tables/05_outcomes_at_lstar.csv, identity nearest neighbour and type probe per state;
- attention (06): tables/06_attention_per_prompt_at_lstar.csv, each fact's mean over its prompts, then over facts;
  the peak of the evidence weight over layers from tables/06_evidence_weight_per_prompt.csv (every layer, targets);
- the first-order test (12): tables/12_first_order.csv, the worst |measured change| / bound;
- the KL sweep's GSM8K replies (11): tables/11_kl_sweep_gsm8k_scored.csv, the mean over problems;
- the arithmetic facts (14): the original's per-prompt rows (tables/14_arith_original_per_item.csv) and every
  model's two-step problems (tables/14_two_step_solved.csv), each fact's mean over its problems, then over facts;
- 04's probes at l* (tables/04_probe_outcomes_at_lstar.csv: each split's test prompts, real and control labels, and
  their difference, the selectivity), and the same country probe as 10 measures it for the benchmark's arms (10's
  per-prompt outcomes).
Not recomputable from per-prompt rows yet (their per-state measurements are not committed; the record holds the
value of an aggregate table): 04's per-layer curves, 05's centroid ratio and silhouette (mean ± std over
frames of its per-layer table).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from rlcp_utils.core import results
from rlcp_utils.core.config import load_profile
from rlcp_utils.data import facts


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def _metric_names(fact_set: str, condition: str) -> dict[str, str]:
    """{record metric: per-prompt column}: recall from `correct`, the answer's probability from `answer_prob`."""
    measure, split = condition.split(".")
    return {f"{fact_set}.{condition}": "correct", f"{fact_set}.{measure}_answer_prob.{split}": "answer_prob"}


def _score(items: pd.DataFrame, column: str) -> float:
    """Mean over draws of the mean over seeds of the mean over facts of each fact's mean over its prompts."""
    per_fact = items.groupby(["fact_draw", "seed", "city"])[column].mean()
    return float(per_fact.groupby(level=["fact_draw", "seed"]).mean().groupby(level="fact_draw").mean().mean())


def _prompt_scores(items: pd.DataFrame, arm: str, seed: str, fact_draw: str) -> list[dict]:
    """Recomputed values of every (fact set, condition) of one arm's per-prompt rows, for one seed (or 'all') and one
    draw (or 'all')."""
    # files written before fact draws were a factor have no fact_draw column: their rows are of draw 0
    draws = items["fact_draw"] if "fact_draw" in items else pd.Series(0, index=items.index)
    items = items.assign(fact_draw=draws.fillna(0).astype(int).astype(str), seed=items.seed.astype(str))
    if fact_draw != "all":
        items = items[items.fact_draw == fact_draw]
    if seed != "all":
        items = items[items.seed == seed]
    out = []
    for (fact_set, condition), d in items.groupby(["facts", "condition"]):
        for metric, column in _metric_names(fact_set, condition).items():
            if d[column].notna().all():  # the adversary's rows have no answer probability
                out.append({"arm": arm, "seed": seed, "fact_draw": fact_draw, "metric": metric,
                            "recomputed": _score(d.astype({column: float}), column)})
    return out


def job_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    """Every record row of an arm trained in jobs (jobs/<arm>/*/per_item.csv), recomputed from its per-prompt rows."""
    rows = []
    for arm in sorted(set(record.arm)):
        files = sorted((out / "jobs" / arm).glob("*/per_item.csv"))
        if not files:
            continue
        items = pd.concat([_read(f) for f in files], ignore_index=True)
        for seed, draw in record[record.arm == arm][["seed", "fact_draw"]].drop_duplicates().itertuples(index=False):
            rows += _prompt_scores(items, arm, seed, draw)
    return pd.DataFrame(rows)


def subset_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    """08's and 13's rows on subsets of the facts, from the per-prompt rows job_scores reads (and 01's for the
    original): the retain facts at even positions of data/retain.jsonl (retain_train: the benchmark's retain term
    trains on them) and at odd positions (retain_heldout: no arm trains on them), and 13's targets trained by every
    fact-count setting (shared_targets: the first min(5, n_targets, *fact_counts) of data/targets.jsonl). The record
    must come from the 01 run whose data/ is committed beside it (true of current notebooks: a new 01 makes them stale)."""
    wanted = record[record.metric.str.split(".").str[0].isin(["retain_train", "retain_heldout", "shared_targets"])]
    if wanted.empty:
        return pd.DataFrame()
    retain, targets = ([f["city"] for f in facts.read_jsonl(out / "data" / name)] for name in ["retain.jsonl", "targets.jsonl"])
    fact_counts = yaml.safe_load((out / "params.resolved.yaml").read_text()).get("fact_counts") or []
    subsets = {"retain_train": ("retain", set(retain[0::2])), "retain_heldout": ("retain", set(retain[1::2])),
               "shared_targets": ("targets", set(targets[:min(5, len(targets), *fact_counts)]))}
    rows = []
    for arm, d in wanted.groupby("arm"):
        if arm == "original":
            items = _read(out / "tables" / "per_item_original.csv").assign(seed=0)
        else:
            files = sorted((out / "jobs" / arm).glob("*/per_item.csv"))
            if not files:
                continue
            items = pd.concat([_read(f) for f in files], ignore_index=True)
        in_subsets = pd.concat([items[(items.facts == kind) & items.city.isin(cities)].assign(facts=name)
                                for name, (kind, cities) in subsets.items()], ignore_index=True)
        for seed, draw in d[["seed", "fact_draw"]].drop_duplicates().itertuples(index=False):
            rows += _prompt_scores(in_subsets, arm, seed, draw)
    return pd.DataFrame(rows)


def probe_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    """04's probes at l*, real and control labels: the mean over splits of the share of test prompts read right; the
    selectivity is real minus control (tables written before control outcomes were kept hold real labels only)."""
    t = _read(out / "tables" / "04_probe_outcomes_at_lstar.csv")
    t = t if "labels" in t else t.assign(labels="real")
    acc = {key: d.astype({"correct": float}).groupby("split").correct.mean().mean()
           for key, d in t.groupby(["arm", "test", "probe", "position", "labels"])}
    rows = [{"arm": arm, "seed": None, "fact_draw": "0", "recomputed": v,
             "metric": f"heldout_probe_accuracy.{test}.{probe}.{pos}" + (".control" if labels == "control" else "")}
            for (arm, test, probe, pos, labels), v in acc.items()]
    rows += [{"arm": arm, "seed": None, "fact_draw": "0", "metric": f"probing.selectivity.{test}.{probe}.{pos}",
              "recomputed": v - acc[(arm, test, probe, pos, "control")]}
             for (arm, test, probe, pos, labels), v in acc.items() if labels == "real" and (arm, test, probe, pos, "control") in acc]
    return pd.DataFrame(rows)


def collapse_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    """05's per-state outcomes at l*: each entity's share over its frames, then the mean over the entities."""
    t = _read(out / "tables" / "05_outcomes_at_lstar.csv")
    rows = []
    for (ctx, arm), d in t.groupby(["context", "arm"]):
        for name, part, column in [("identity_nn.city_target", d[d.target_city.astype(bool)], "identity_nn"),
                                   ("identity_nn.fruit", d[d.type == "fruit"], "identity_nn"),
                                   ("identity_nn.number", d[d.type == "number"], "identity_nn"),
                                   ("type_probe_heldout_entities", d, "type_probe")]:
            rows.append({"arm": arm, "seed": None, "fact_draw": "0", "metric": f"collapse.{ctx}.{name}",
                         "recomputed": part.astype({column: float}).groupby("entity")[column].mean().mean()})
    return pd.DataFrame(rows)


def attention_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    """06's attention measures at l*: each fact's mean over its prompts, then the mean over facts."""
    t = _read(out / "tables" / "06_attention_per_prompt_at_lstar.csv")
    return pd.DataFrame([{"arm": arm, "seed": None, "fact_draw": "0", "metric": f"attention.{m}.{role}",
                          "recomputed": d.groupby("fact")[m].mean().mean()}
                         for (arm, role), d in t.groupby(["arm", "role"])
                         for m in ["evidence_weight", "entropy_context", "entropy_all", "context_weight"]])


def attention_peak_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    """06's peak of the evidence weight over layers: per layer the mean over the target prompts, then its largest value
    and the first layer that reaches it (tables/06_evidence_weight_per_prompt.csv)."""
    t = _read(out / "tables" / "06_evidence_weight_per_prompt.csv")
    rows = []
    for arm, d in t.groupby("arm"):
        per_layer = d.groupby("layer").evidence_weight.mean().sort_index()
        peak = float(per_layer.max())
        rows += [{"arm": arm, "seed": None, "fact_draw": "0", "metric": "attention.peak_evidence_weight", "recomputed": peak},
                 {"arm": arm, "seed": None, "fact_draw": "0", "metric": "attention.peak_evidence_layer",
                  "recomputed": float(per_layer.index[per_layer.to_numpy() == peak][0])}]
    return pd.DataFrame(rows)


def original_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    items = _read(out / "tables" / "per_item_original.csv").assign(seed="all")
    rows = []
    for draw in sorted(set(record[record.arm == "original"].fact_draw)):
        rows += _prompt_scores(items, "original", "all", draw)
    return pd.DataFrame(rows)


def gsm8k_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    scored = _read(out / "tables" / "07_gsm8k_scored.csv")
    base = scored[scored.arm == "original"].set_index("index")
    rows = []
    for arm, d in scored.groupby("arm"):
        d = d.set_index("index")
        for m in [c for c in scored.columns if f"gsm8k.{c}" in set(record.metric)]:
            # the trained arms' replies are their first training seed's (the record names it): any seed matches
            seed = "all" if arm == "original" else None
            rows.append({"arm": arm, "seed": seed, "fact_draw": "0", "metric": f"gsm8k.{m}", "recomputed": d[m].astype(float).mean()})
            if arm != "original":
                rows.append({"arm": arm, "seed": seed, "fact_draw": "0", "metric": f"gsm8k.{m}.minus_original",
                             "recomputed": (d[m].astype(float) - base.loc[d.index, m].astype(float)).mean()})
    return pd.DataFrame(rows)


def relearning_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for path in sorted((out / "analyses" / "09_relearning").glob("*_quantized.csv")):
        # each format's scores: the mean over facts of each fact's score (kept as per_fact.<condition> rows)
        t = _read(path)
        per_fact = t[t.metric.str.startswith("per_fact.")]
        for (fmt, fact_set, metric), d in per_fact.groupby(["fmt", "facts", "metric"]):
            rows.append({"arm": path.stem.removesuffix("_quantized"), "seed": None, "fact_draw": "0",
                         "metric": f"quant.{fmt}.{fact_set}.{metric.removeprefix('per_fact.')}", "recomputed": d.value.astype(float).mean()})
    for path in sorted((out / "analyses" / "09_relearning").glob("*.csv")):
        t = _read(path)
        if not {"attack", "budget", "fact", "correct"} <= set(t.columns):
            continue  # the quantized scores and other caches of the notebook
        arm = path.stem
        relearn = t[t.attack == "relearn"]
        for budget, d in relearn.groupby("budget"):
            rows.append({"arm": arm, "seed": None, "fact_draw": "0", "metric": f"relearn.recall.step{int(budget)}",
                         "recomputed": d.groupby("fact").correct.mean().mean()})
        benign = t[t.attack == "benign"]
        if len(benign):
            rows.append({"arm": arm, "seed": None, "fact_draw": "0", "metric": "benign_relearn.targets_recall",
                         "recomputed": benign.groupby("fact").correct.mean().mean()})
    return pd.DataFrame(rows)


def unlearning_check_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    folder = out / "analyses" / "10_unlearning_checks"
    rows = []
    for path in sorted(folder.glob("fluency_*.csv")):
        arm, f = path.stem.removeprefix("fluency_"), _read(path)
        for fact_set, d in f.groupby("set"):
            for m in ["names_a_country", "degenerate"]:
                rows.append({"arm": arm, "seed": None, "fact_draw": "0", "metric": f"fluency.{m}.{fact_set}",
                             "recomputed": d.astype({m: float}).groupby("fact")[m].mean().mean()})
    for path in sorted(folder.glob("country_probe_*.csv")):
        arm, p = path.stem.removeprefix("country_probe_"), _read(path)
        if "city" not in p:  # a table of an older version of the notebook, left in a reused outputs folder
            continue
        for pos, d in p.groupby("position"):  # each target's accuracy over the probe's splits and its prompts
            rows.append({"arm": arm, "seed": None, "fact_draw": "0", "metric": f"heldout_probe_accuracy.country_target.linear.{pos}",
                         "recomputed": d.astype({"correct": float}).groupby("city").correct.mean().mean()})
    return pd.DataFrame(rows)


def first_order_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    t = _read(out / "tables" / "12_first_order.csv")
    ratio = t.measured_change.abs() / t.bound
    rows = []
    for moved, d in t.assign(ratio=ratio).groupby("L moved"):
        rows.append({"arm": "original", "seed": "all", "fact_draw": "0", "metric": f"gradients.first_order.{moved}.worst_ratio",
                     "recomputed": d.ratio.max()})
    return pd.DataFrame(rows)


def kl_sweep_gsm8k_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    scored = _read(out / "tables" / "11_kl_sweep_gsm8k_scored.csv")
    return pd.DataFrame([{"arm": arm, "seed": None, "fact_draw": "0", "metric": f"kl_sweep.gsm8k.{m}", "recomputed": d[m].astype(float).mean()}
                         for arm, d in scored.groupby("arm") for m in ["n_tokens", "repeats_itself", "any_scaffolding", "correct"]])


def arithmetic_scores(out: Path, record: pd.DataFrame) -> pd.DataFrame:
    """The original's arithmetic facts (its per-prompt rows) and every model's two-step problems: targeted ones are
    those of the trained arms' target facts, held-out ones those of their held-out (retain) facts."""
    rows = _prompt_scores(_read(out / "tables" / "14_arith_original_per_item.csv").assign(seed="all"), "arith_original", "all", "0")
    jobs_items = pd.concat([_read(f) for f in sorted((out / "jobs").glob("arith_*/*/per_item.csv"))], ignore_index=True)
    groups = {"targeted": set(jobs_items[jobs_items.facts == "targets"].city), "heldout": set(jobs_items[jobs_items.facts == "retain"].city)}
    solved = _read(out / "tables" / "14_two_step_solved.csv")
    for arm, d in solved.groupby("arm"):
        for which, cities in groups.items():
            for m in ["product_right", "step_right", "answer_right"]:
                rows.append({"arm": arm, "seed": None, "fact_draw": "0", "metric": f"two_step.{which}.{m}",
                             "recomputed": d[d.fact.isin(cities)].astype({m: float}).groupby("fact")[m].mean().mean()})
    return pd.DataFrame(rows)


# notebook -> the recipes that recompute some of its rows
RECIPES: dict[str, list[Callable[[Path, pd.DataFrame], pd.DataFrame]]] = {
    "01_data": [original_scores],
    "02_baselines": [job_scores],
    "03_rlcp_training": [job_scores],
    "04_probing": [probe_scores],
    "05_collapse": [collapse_scores],
    "06_attention": [attention_scores, attention_peak_scores],
    "07_gsm8k": [gsm8k_scores],
    "08_unlearning": [job_scores, subset_scores],
    "09_relearning": [relearning_scores],
    "10_unlearning_checks": [unlearning_check_scores],
    "11_kl_verbosity": [job_scores, kl_sweep_gsm8k_scores],
    "12_gradient_geometry": [first_order_scores],
    "13_fact_counts": [job_scores, subset_scores],
    "14_arithmetic_facts": [job_scores, arithmetic_scores],
}


def recompute(out: Path, notebook: str) -> pd.DataFrame:
    """The rows of one notebook's results file that its recipes recompute: recorded and recomputed value side by
    side (columns arm, seed, fact_draw, metric, recorded, recomputed, abs_diff). A recipe's seed None matches any."""
    record = results.read(out / "results" / f"{notebook}.csv")
    parts = [f(out, record) for f in RECIPES.get(notebook, [])]
    found = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else pd.DataFrame()
    if found.empty:
        return pd.DataFrame(columns=["arm", "seed", "fact_draw", "metric", "recorded", "recomputed", "abs_diff"])
    rec = record[["arm", "seed", "fact_draw", "metric", "value"]].rename(columns={"value": "recorded"})
    any_seed = found.seed.isna()
    exact = found[~any_seed].merge(rec, on=["arm", "seed", "fact_draw", "metric"])
    loose = found[any_seed].drop(columns="seed").merge(rec, on=["arm", "fact_draw", "metric"])
    both = pd.concat([exact, loose], ignore_index=True)
    return both.assign(abs_diff=(both.recorded.astype(float) - both.recomputed.astype(float)).abs())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--tolerance", type=float, default=1e-9)
    args = ap.parse_args(argv)
    out = load_profile(args.profile).output_dir
    worst = 0.0
    for notebook in RECIPES:
        if not (out / "results" / f"{notebook}.csv").exists():
            print(f"{notebook}: no results file")
            continue
        try:
            t = recompute(out, notebook)
        except FileNotFoundError as err:  # a results file written by an older notebook that kept no such table
            print(f"{notebook}: a per-prompt source is missing ({Path(err.filename).name}): rerun the notebook")
            worst = float("inf")
            continue
        bad = t[t.abs_diff > args.tolerance]
        worst = max(worst, float(t.abs_diff.max()) if len(t) else float("inf"))  # no row recomputed: its sources are missing
        print(f"{notebook}: {len(t)} rows recomputed, {len(bad)} differ (largest difference "
              f"{t.abs_diff.max() if len(t) else float('nan'):.2e})")
        for r in bad.head(5).itertuples():
            print(f"  {r.arm} seed {r.seed} draw {r.fact_draw} {r.metric}: recorded {r.recorded:.6f}, recomputed {r.recomputed:.6f}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
