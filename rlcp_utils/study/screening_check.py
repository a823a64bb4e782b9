"""Does the selection of facts depend on how the screening ran? The profile's candidate pool screened under several
settings of the model's precision, the batch size and the padding side: every candidate must get the same status,
and every draw the same facts, as the committed fact set.

    python -m rlcp_utils.study.screening_check --profile default   # writes outputs/bench/screening_<profile>.json

Scoring runs in fp32 with batch-invariant matrix products whatever the model's precision (measures.evaluate,
batching.row_invariant), so the precision setting checks that no bf16 reaches the screening. Batch size 1 costs one
forward pass per prompt (about 0.35 s on 2 cores): it screens every `every`-th candidate and must reproduce their
margins bit for bit. tests/test_screening.py runs this on the smoke profile.
"""

from __future__ import annotations

import argparse
import json
import time

from rlcp_utils.core import config, model, outputs
from rlcp_utils.data import facts
from rlcp_utils.measures import screening

# (model precision, batch size, padding side); the first is the study's own setting, the one the others are compared with
SETTINGS = (("fp32", 64, "right"), ("bf16", 16, "left"), ("fp32", 1, "right"))


def _key(row: dict) -> tuple[str, str]:
    return row["city"], row["country"]


def compare(profile, settings=SETTINGS, every: int = 5) -> dict:
    """Screen the profile's pool under each setting (batch size 1 on every `every`-th candidate). Returns the
    settings with their time and status counts, the candidates whose status or margin differs from the first
    setting's, and, for settings that screened the whole pool, each draw's agreement with the committed fact set."""
    P = profile
    record = facts.load_fact_set(P) if P["fact_set"] != facts.SCREENED else None
    prompt_format = record["prompt_format"] if record else P["prompt_format"]
    if prompt_format not in ("chat", "plain"):
        raise ValueError(f"fact_set: {facts.SCREENED} with prompt_format: {prompt_format}: name the format to screen in")
    pool = facts.candidate_pool(P["n_countries_pool"], P["cities_per_country"])
    questions = [q for q in facts.split_templates(facts.QUESTION_TEMPLATES[: P["n_question_templates"]],
                                                   P["n_heldout_templates"], "q") if q.split == "train"]
    lm, tok = model.load_for(config.profile_with(P, precision="fp32"))
    runs, base = [], None
    for precision, batch_size, padding in settings:
        candidates = pool[::every] if batch_size == 1 else pool
        lm.rlcp_precision = precision
        t0 = time.time()
        rows = screening.screen(lm, tok, candidates, questions, prompt_format, batch_size, P["known_threshold"],
                                P["screen_margin"], padding=padding, desc=f"screening {precision} batch {batch_size} {padding}")
        run = {"precision": precision, "batch_size": batch_size, "padding": padding, "candidates": len(rows),
               "seconds": round(time.time() - t0, 1),
               "statuses": {s: sum(r["status"] == s for r in rows) for s in screening.STATUSES}}
        if base is None:
            base = {_key(r): r for r in rows}
            known_by_country: dict[str, int] = {}
            for r in rows:
                known_by_country[r["country"]] = known_by_country.get(r["country"], 0) + (r["status"] == "known")
            # the countries a target can come from: every draw picks n_targets of them, so draws share facts
            run["eligible_target_countries"] = sum(n >= P["min_probe_cities"] + 1 for n in known_by_country.values())
        else:
            theirs = [(r, base[_key(r)]) for r in rows]
            run["status_differs"] = [f"{r['city']}: {b['status']} -> {r['status']}" for r, b in theirs if r["status"] != b["status"]]
            run["max_margin_difference"] = max(abs(r["min_abs_margin"] - b["min_abs_margin"]) for r, b in theirs)
        if len(rows) == len(pool) and record is not None:
            selected = [facts.select_facts(rows, P["n_targets"], P["n_retain"], P["min_probe_cities"], P["seed"], draw=d)
                        for d in range(P["fact_draws"])]
            run["agreement_with_committed"] = [
                {"draw": d, **a} for d in range(P["fact_draws"])
                for a in facts.agreement(facts.committed_draw(record, d, rows), selected[d])]
        runs.append(run)
    return {"profile": P.name, "model": P["model"], "prompt_format": prompt_format, "candidates": len(pool),
            "train_templates": len(questions), "screen_margin": P["screen_margin"], "every_for_batch_1": every,
            "runs": runs}


def identical(result: dict) -> bool:
    """Every setting gave every candidate the same status and every draw the committed facts; the settings with the
    first one's padding side gave the same margins, bit for bit (left padding moves every position of a short row:
    rotary attention does not see the shift in exact arithmetic, but the last bits do)."""
    padding = result["runs"][0]["padding"]
    for run in result["runs"]:
        if run.get("status_differs"):
            return False
        if run["padding"] == padding and run.get("max_margin_difference", 0.0) != 0.0:
            return False
        if any(a["shared"] != a["committed"] or a["committed"] != a["selected_here"] or not a["same_order"]
               for a in run.get("agreement_with_committed", [])):
            return False
    return True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--every", type=int, default=5, help="batch size 1 screens every n-th candidate")
    args = parser.parse_args(argv)
    P = config.load_profile(args.profile)
    result = compare(P, every=args.every)
    result.update(identical=identical(result), commit=outputs.git_commit(), machine=outputs.machine())
    path = config.outputs_root() / "bench" / f"screening_{args.profile}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    for run in result["runs"]:
        print({k: v for k, v in run.items() if k != "agreement_with_committed"})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
