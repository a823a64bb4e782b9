"""What the open-question notebooks (11_kl_verbosity, 12_gradient_geometry, 13_fact_counts,
14_arithmetic_facts) share: sweeps of a training method through the one loop, and the arithmetic task.

A sweep setting is a training job like 02/03's, trained under other parameters (`sweep_profile`) or on other
facts, in a folder of its own name (training/jobs.py); `job_rows` summarises a setting's seeds as 02/03 do,
`bootstrap_row` makes a record row of one measure over units (problems, facts), `fmt` shows a number with its
interval. The arithmetic task (single-digit multiplication facts and the two-step problems that need them,
measures/arithmetic.py) is screened on the original model by `arithmetic_task`: 12 measures gradients on it and
14 forgets its facts, both on the same screening.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rlcp_utils.core import config
from rlcp_utils.data import facts
from rlcp_utils.measures import arithmetic, evaluate, screening
from rlcp_utils.training import dispatch, jobs


def sweep_profile(P: config.Profile, seeds, **overrides) -> config.Profile:
    """The profile with some training parameters changed (same outputs folder; the changes enter the job keys)."""
    return config.profile_with(P, seeds=list(seeds), **overrides)


def rlcp_jobs(P: config.Profile, study, seeds, inputs=None) -> list[jobs.Job]:
    """03's RLCP jobs of these seeds, to dispatch with a notebook's own jobs: loaded when finished, trained
    only when missing or stale (`inputs`: the notebook's TrainingInputs, or None to build them only then)."""
    return [jobs.Job(P, "rlcp", seed, study, inputs=inputs) for seed in seeds]


def by_setting(job_list: list[jobs.Job], results: list[dict]) -> dict[str, dict[int, dict]]:
    """A dispatch's results ({job folder: {seed: run_job result}}), in the order of the jobs."""
    out: dict[str, dict[int, dict]] = {}
    for job, result in zip(job_list, results):
        out.setdefault(job.folder_name, {})[job.seed] = result
    return out


def rlcp_runs(P: config.Profile, study, inputs, seeds, desc: str) -> dict:
    """03's RLCP jobs of these seeds ({seed: run_job result}), dispatched on their own."""
    job_list = rlcp_jobs(P, study, seeds, inputs)
    return by_setting(job_list, dispatch.run_jobs(job_list, desc))["rlcp"]


def job_rows(P: config.Profile, runs: dict) -> tuple[list[dict], pd.DataFrame]:
    """A setting's per-seed record rows and its summary over seeds (jobs.summarize_arm, as in 02/03)."""
    summary = jobs.summarize_arm(P, runs)
    return summary["rows"], pd.DataFrame(summary["summary"])


def bootstrap_row(P: config.Profile, arm: str, seed: str, metric: str, values, unit: str, n_seeds: int, **fields) -> dict:
    """A record row: the mean of `values` (one per unit: problems, facts) with its 95% bootstrap interval over
    the units; `fields` adds the chance level, n_prompts."""
    mean, lo, hi = evaluate.bootstrap_ci(np.asarray(values, dtype=float), P["n_bootstrap"], P["seed"])
    return {"arm": arm, "seed": seed, "metric": metric, "value": mean, "ci_low": lo, "ci_high": hi,
            "interval": f"95% bootstrap over {unit}", **fields, "unit": unit, "n_units": len(values), "n_seeds": n_seeds}


def fmt(value, lo=None, hi=None, pct=True) -> str:
    """'12.3% [5%, 20%]' (or '1.23 [0.50, 2.00]' with pct=False); the value alone when there is no interval."""
    f = (lambda x: f"{x:.0%}") if pct else (lambda x: f"{x:.2f}")
    text = f"{value:.1%}" if pct else f"{value:.2f}"
    return text if lo is None or pd.isna(lo) else f"{text} [{f(lo)}, {f(hi)}]"


@dataclass
class ArithmeticTask:
    """The multiplication facts 2..arith_max_factor screened on the original model, and the two-step problems."""
    questions: list  # the arithmetic wordings (train and held out), as the study's templates
    evidences: list
    facts: list[dict]  # every a x b, as facts {'city': '7 x 8', 'country': '56'}
    recall: pd.Series  # the original's no-context recall of each fact on the training wordings
    known: list[dict]  # the facts known by 01's rule (measures.screening: firmly recalled on known_threshold of the wordings)
    two_step: list[dict]  # arith_addends problems 'a x b + c' per fact
    two_step_ids: list[list[int]]  # their scaffolded prompts
    original: pd.DataFrame  # the original's scored continuations (solve_two_step)
    chance: float  # how often a final number equals another problem's answer


def solve_two_step(P: config.Profile, tok, task: ArithmeticTask, lm) -> pd.DataFrame:
    """Greedy scaffolded continuations of every two-step problem, scored (product step, final answer)."""
    texts = evaluate.greedy_generate(lm, tok, task.two_step_ids, 16, P["generation_batch_size"])
    return pd.DataFrame([{"fact": p["city"], "addend": p["addend"], "text": t, **arithmetic.score_two_step(t, p)}
                         for p, t in zip(task.two_step, texts)])


def arithmetic_task(P: config.Profile, study, reference, tok) -> ArithmeticTask:
    """Screen the multiplication facts on the original model (01's rule for a known fact) and solve the two-step
    problems with it; chance for a two-step answer: the rate at which the final number equals another
    problem's answer (a derangement)."""
    questions, evidences = arithmetic.templates()
    all_facts = arithmetic.multiplication_facts(2, P["arith_max_factor"])
    train_q = [q for q in questions if q.split == "train"]
    screened = screening.screen(reference, tok, all_facts, train_q, study.prompt_format, P["eval_batch_size"],
                                P["known_threshold"], P["screen_margin"])
    recall = pd.Series([r["recall_train"] for r in screened])
    known = [f for f, r in zip(all_facts, screened) if r["status"] == "known"]
    two_step = arithmetic.two_step_problems(all_facts, P["arith_addends"], P["seed"])
    two_step_ids = [facts.encode_prompt(tok, facts.render(tok, p["question"], study.prompt_format), study.prompt_format)
                    for p in two_step]
    task = ArithmeticTask(questions, evidences, all_facts, recall, known, two_step, two_step_ids, pd.DataFrame(), 0.0)
    task.original = solve_two_step(P, tok, task, reference)
    wrong = evaluate.derangement([p["answer"] for p in two_step], P["seed"])
    task.chance = float(np.mean([w != p["answer"] and arithmetic.numbers(t.split("\n")[0])[-1:] == [w]
                                 for p, t, w in zip(two_step, task.original.text, wrong)]))
    return task
