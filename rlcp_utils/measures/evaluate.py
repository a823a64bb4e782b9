"""Scoring answers and summarising with a spread.

`score_answers` runs the model once on prompt + answer tokens (teacher forcing) and reads off:
- answer_logprob: log P(answer tokens | prompt), summed over the answer's tokens;
- greedy_correct: whether greedy decoding would produce exactly the answer's tokens, which holds iff the
  argmax at every answer position is the answer token. This equals "greedy generation starts with the
  answer" and costs one forward pass instead of a generation loop.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from rlcp_utils.core.batching import (
    SharedPrefixPass,
    autocast,
    batches,
    left_pad,
    padding_skipped,
    right_pad,
    row_invariant,
)
from rlcp_utils.core.progress import track
from rlcp_utils.data import facts
from rlcp_utils.measures.states import hidden_states_at


@torch.no_grad()
def score_answers(model, prompt_ids: list[list[int]], answer_ids: list[list[int]], batch_size: int = 64,
                  pad_id: int = 0, desc: str | None = None, padding: str = "right") -> dict[str, np.ndarray]:
    """Teacher-forced answer scores for each (prompt, answer) pair; inputs are token id lists. Each pair's scores
    depend on that pair alone (`row_invariant`), not on the batch size or the other pairs.

    greedy_margin: the smallest gap, over the answer's tokens, between the answer token's log-probability and the
    best other token's; positive iff greedy decoding produces the answer (greedy_correct), and how far the decision
    is from flipping. `padding`: 'right' (the study's) or 'left' (a check that the screening does not depend on it:
    left padding shifts every position of a short row, which rotary attention does not see, in exact arithmetic)."""
    if len(prompt_ids) != len(answer_ids):
        raise ValueError("prompt_ids and answer_ids must have the same length")
    if padding not in ("right", "left"):
        raise ValueError(f"padding must be 'right' or 'left', got {padding!r}")
    with row_invariant(model):
        return _score_answers(model, prompt_ids, answer_ids, batch_size, pad_id, desc, padding)


def _score_answers(model, prompt_ids, answer_ids, batch_size, pad_id, desc, padding) -> dict[str, np.ndarray]:
    device = next(model.parameters()).device
    logprob = np.zeros(len(prompt_ids))
    first_prob = np.zeros(len(prompt_ids))
    margin = np.zeros(len(prompt_ids))
    first_choice = np.zeros(len(prompt_ids), dtype=np.int64)
    order = np.argsort([len(p) + len(a) for p, a in zip(prompt_ids, answer_ids)])  # less padding
    for idx in track(list(batches(len(order), batch_size)), desc):
        rows = [order[i] for i in idx]
        seqs = [prompt_ids[r] + answer_ids[r] for r in rows]
        # at least 32 positions: attention over fewer takes other kernels at other widths (short plain prompts)
        if padding == "right":
            ids, mask = right_pad(seqs, pad_id, device, min_width=32)
            # The rows share the chat template's first tokens: run them once (SharedPrefixPass); the linear layers
            # skip the padding after them
            with padding_skipped(model, mask[:, SharedPrefixPass.shared_len(ids, mask):]):
                hidden = SharedPrefixPass(model, ids, mask).last_hidden_state
            starts = [0] * len(rows)
        else:
            ids, mask = left_pad(seqs, pad_id, min_width=32)
            hidden = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            starts = [ids.shape[1] - len(s) for s in seqs]
        # Only the positions that predict answer tokens need the (large) vocabulary projection: position t predicts t+1
        owner = [j for j, r in enumerate(rows) for _ in answer_ids[r]]
        cols = [starts[j] + len(prompt_ids[r]) - 1 + k for j, r in enumerate(rows) for k in range(len(answer_ids[r]))]
        logits = model.lm_head(hidden[owner, cols]).float()
        start = 0
        for r in rows:
            ans = answer_ids[r]
            logp = torch.log_softmax(logits[start: start + len(ans)], dim=-1)
            start += len(ans)
            target = torch.tensor(ans, device=logp.device)
            token_logp = logp.gather(1, target[:, None])[:, 0]
            best_other = logp.scatter(1, target[:, None], float("-inf")).max(-1).values
            logprob[r] = token_logp.sum().item()
            first_prob[r] = token_logp[0].exp().item()
            first_choice[r] = int(logp[0].argmax())
            margin[r] = (token_logp - best_other).min().item()
    return {"answer_logprob": logprob, "answer_prob": np.exp(logprob), "first_token_prob": first_prob,
            "greedy_correct": margin > 0, "greedy_margin": margin, "first_choice": first_choice}


@torch.no_grad()
def greedy_generate(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int = 32,
                    desc: str | None = None) -> list[str]:
    """Greedy continuations (left-padded batches, KV cache), decoded without special tokens."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts: list[str] = [""] * len(prompt_ids)
    for idx in track(list(batches(len(prompt_ids), batch_size)), desc):
        ids, mask = left_pad([prompt_ids[i] for i in idx], pad)
        width = ids.shape[1]
        with autocast(model):
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad)
        for j, i in enumerate(idx):
            texts[i] = tokenizer.decode(out[j, width:], skip_special_tokens=True)
    return texts


def bootstrap_ci(values_by_unit: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval, resampling units (facts), each unit's value already averaged
    over its templates: templates of one fact are not independent draws."""
    v = np.asarray(values_by_unit, dtype=float)
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(v.mean()), float(lo), float(hi)


# --- the evaluation every arm gets (Group A in 01_data, the trained arms in 02/03) --------------------

CONDITIONS = {  # metric name -> (question split, with evidence?)
    "no_context_recall.train": ("train", False),
    "no_context_recall.heldout": ("heldout", False),
    "rag_accuracy.train": ("train", True),
    "rag_accuracy.heldout": ("heldout", True),
}


def derangement(values: list, seed: int) -> list:
    """Each position gets the value of another position (a cyclic shift along a seeded permutation)."""
    order = np.random.default_rng(seed).permutation(len(values))
    out = list(values)
    for a, b in zip(order, np.roll(order, 1)):
        out[a] = values[b]
    return out


def per_fact(items: list[dict], scores: dict) -> "pd.DataFrame":
    """Per fact: fraction of its prompts answered correctly (greedy) and mean answer probability."""
    frame = pd.DataFrame({"fact": [it["fact"] for it in items], "correct": scores["greedy_correct"],
                          "prob": scores["answer_prob"]})
    return frame.groupby("fact").agg(recall=("correct", "mean"), prob=("prob", "mean"))


def wrong_answer_produced(model, items: list[dict], wrong_items: list[dict], first_choice: np.ndarray, batch_size: int,
                          pad_id: int) -> np.ndarray:
    """Whether greedy decoding produces each item's wrong answer (chance's numerator), `wrong_items` having the same
    prompts as `items`, whose scores gave `first_choice` (the model's first token after each prompt). Greedy decoding
    starts with that token, so a wrong answer that starts otherwise is not produced (its greedy margin is not positive):
    only the few wrong answers that start with the first choice are scored. The same result as scoring them all
    (scores do not depend on the batch), at a fraction of the cost."""
    if any(w["prompt_ids"] != i["prompt_ids"] for i, w in zip(items, wrong_items, strict=True)):
        raise ValueError("wrong_items must ask the items' prompts")
    produced = np.zeros(len(wrong_items), dtype=bool)
    maybe = [k for k, w in enumerate(wrong_items) if w["answer_ids"][0] == first_choice[k]]
    if maybe:
        s = score_answers(model, [wrong_items[k]["prompt_ids"] for k in maybe], [wrong_items[k]["answer_ids"] for k in maybe],
                          batch_size, pad_id)
        produced[maybe] = s["greedy_correct"]
    return produced


def evaluate_arm(model, tokenizer, arm: str, fact_sets: dict[str, list[dict]], questions, evidences,
                 prompt_format: str, batch_size: int, n_bootstrap: int, seed: int, desc: str | None = None):
    """No-context recall and RAG accuracy of one model on each fact set, per template split.

    Returns (summary rows, per-item rows). Each summary row has the mean over facts (each fact first averaged
    over its templates), a 95% bootstrap interval over facts, the measured chance level (the same scoring
    with every answer replaced by another fact's country: how often the model names a specific wrong country
    of the set; wrong_answer_produced) and the number of facts and prompts."""
    parts = []  # (fact set, its size, condition, its items, their deranged twins)
    for set_name, fact_set in fact_sets.items():
        wrong = derangement([f["country"] for f in fact_set], seed)
        deranged = [{**f, "deranged_country": w} for f, w in zip(fact_set, wrong)]
        for cond, (split, with_evidence) in CONDITIONS.items():
            qs = [q for q in questions if q.split == split]
            es = [e for e in evidences if e.split == split] if with_evidence else None
            parts.append((set_name, len(fact_set), cond, facts.build_items(tokenizer, fact_set, qs, prompt_format, es),
                          facts.build_items(tokenizer, deranged, qs, prompt_format, es, answer_key="deranged_country")))
    # every prompt in one call (a prompt's scores do not depend on the batch, so this is what scoring each fact set and
    # condition on its own gives, with fewer partly filled blocks and chat-prefix passes)
    its_all = [i for *_, its, _ in parts for i in its]
    wrong_all = [w for *_, wrong_its in parts for w in wrong_its]
    right_all = score_answers(model, [i["prompt_ids"] for i in its_all], [i["answer_ids"] for i in its_all], batch_size,
                              tokenizer.pad_token_id, desc=desc)
    wrong_correct_all = wrong_answer_produced(model, its_all, wrong_all, right_all["first_choice"], batch_size, tokenizer.pad_token_id)
    rows, items_out, start = [], [], 0
    for set_name, n_facts, cond, its, wrong_its in parts:
        span = slice(start, start + len(its))
        start += len(its)
        right = {k: v[span] for k, v in right_all.items()}
        by_fact = per_fact(its, right)
        mean, lo, hi = bootstrap_ci(by_fact["recall"].to_numpy(), n_bootstrap, seed)
        rows.append({"arm": arm, "facts": set_name, "metric": cond, "value": mean, "ci_low": lo, "ci_high": hi,
                     "chance": float(per_fact(wrong_its, {"greedy_correct": wrong_correct_all[span],
                                                          "answer_prob": np.full(len(wrong_its), np.nan)})["recall"].mean()),
                     "mean_answer_prob": float(by_fact["prob"].mean()), "n_facts": n_facts, "n_prompts": len(its)})
        items_out += [{"arm": arm, "facts": set_name, "condition": cond, "city": i["city"], "answer": i["answer"],
                       "question_id": i["question_id"], "evidence_id": i["evidence_id"], "correct": bool(c),
                       "answer_prob": float(p)} for i, c, p in zip(its, right["greedy_correct"], right["answer_prob"])]
    return rows, items_out


def record_rows(rows: list[dict], seed: str, n_seeds: int, fact_draw: int = 0) -> list[dict]:
    """evaluate_arm's rows as rows of the results record (results.py): the recall metric, and the mean
    probability of the answer next to it; `seed` is the training seed ('all' for the untrained original),
    `fact_draw` the draw of targets and retain facts it was scored on."""
    out = []
    for r in rows:
        measure, split = r["metric"].split(".")
        common = {"arm": r["arm"], "seed": seed, "fact_draw": fact_draw, "unit": "facts", "n_units": r["n_facts"],
                  "n_prompts": r["n_prompts"], "n_seeds": n_seeds, "interval": FACT_INTERVAL}
        out.append({**common, "metric": f"{r['facts']}.{r['metric']}", "value": r["value"], "ci_low": r["ci_low"],
                    "ci_high": r["ci_high"], "chance": r["chance"]})
        if "mean_answer_prob" in r:
            out.append({**common, "metric": f"{r['facts']}.{measure}_answer_prob.{split}", "value": r["mean_answer_prob"],
                        "interval": ""})
    return out


FACT_INTERVAL = "95% bootstrap over facts"
SEED_INTERVAL = "95% bootstrap over seeds and facts"
DRAW_INTERVAL = "95% bootstrap over fact draws, then seeds and facts within each"


def _two_level_replicates(v: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """The n_boot replicate means of two_level_bootstrap (v: [seeds, units])."""
    n_seeds, n_units = v.shape
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    units = rng.integers(0, n_units, size=(n_boot, n_units))
    return v[seeds[:, :, None], units[:, None, :]].mean(axis=(1, 2))


def _check_seeds_by_units(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"a bootstrap over seeds and units needs a [seeds, units] array, got shape {v.shape}")
    return v


def two_level_bootstrap(values, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile interval of values[s, u] (training seed s, unit u), resampling the seeds and the
    units: the interval covers both how much the outcome moves when the same protocol is trained again and
    which facts happened to be chosen. The same facts are scored under every seed (seeds and facts are
    crossed, not nested), so each replicate draws one set of units for all its seeds; with one seed, or seeds
    that agree, it is the bootstrap over units. (With few seeds the seed level is underestimated, by about
    (S-1)/S in variance, as for any bootstrap.)"""
    v = _check_seeds_by_units(values)
    means = _two_level_replicates(v, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(v.mean()), float(lo), float(hi)


def draw_bootstrap(values_by_draw: list, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile interval over fact draws, each draw a [seeds, units] array of its own facts. Draws are
    the outer unit: a replicate resamples the draws, then within each drawn draw its seeds and its facts (as
    two_level_bootstrap does). Facts are nested in draws (each draw has its own targets and retain facts, and the
    training itself depends on the whole set), which is why a bootstrap over facts alone is too narrow. The
    mean is the mean of the draws' means (each draw counts once, whatever its number of facts). Each drawn copy
    of a draw takes an independent replicate from a pool of n_boot of that draw's replicates."""
    draws = [_check_seeds_by_units(v) for v in values_by_draw]
    if not draws:
        raise ValueError("draw_bootstrap needs at least one fact draw")
    rng = np.random.default_rng(seed)
    inner = np.stack([_two_level_replicates(v, n_boot, rng) for v in draws])  # [draws, n_boot]
    picks = rng.integers(0, len(draws), size=(n_boot, len(draws)))
    which = rng.integers(0, n_boot, size=(n_boot, len(draws)))
    means = inner[picks, which].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(np.mean([v.mean() for v in draws])), float(lo), float(hi)


def _by_fact(d: "pd.DataFrame", column: str, seeds: list) -> np.ndarray:
    """Each fact's score averaged over its prompts, per training seed: [seeds, facts]."""
    return d.groupby(["seed", "city"], sort=True)[column].mean().unstack("city").loc[seeds].to_numpy()


def summarize_seeds(per_item: "pd.DataFrame", seed_rows: "pd.DataFrame", n_bootstrap: int, seed: int) -> list[dict]:
    """Rows with seed 'all' for one arm and one fact draw: per (fact set, condition), each fact's score averaged
    over its prompts in each training seed, then the mean over seeds and facts with a two-level bootstrap
    interval. `per_item` has columns seed, facts, condition, city, correct, answer_prob (and fact_draw: the
    rows' draw, 0 where absent); `seed_rows` are the per-seed record rows (their chance levels are averaged)."""
    out = []
    seeds = sorted(per_item.seed.unique())
    draws = per_item.fact_draw.unique() if "fact_draw" in per_item else [0]
    if len(draws) != 1:
        raise ValueError(f"summarize_seeds summarizes one fact draw, got draws {sorted(draws)} (summarize_draws: several)")
    for (fact_set, cond), d in per_item.groupby(["facts", "condition"], sort=False):
        n_prompts = int(d.groupby("seed").size().iloc[0])
        metric = f"{fact_set}.{cond}"
        chance = seed_rows.loc[seed_rows.metric == metric, "chance"].astype(float)
        common = {"arm": d.arm.iloc[0], "seed": "all", "fact_draw": int(draws[0]), "unit": "facts",
                  "n_units": d.city.nunique(), "n_prompts": n_prompts, "n_seeds": len(seeds), "interval": SEED_INTERVAL}
        out += _summary_rows(common, fact_set, cond, d, chance,
                             lambda column: two_level_bootstrap(_by_fact(d, column, seeds), n_bootstrap, seed))
    return out


def _summary_rows(common: dict, fact_set: str, cond: str, d: "pd.DataFrame", chance: "pd.Series", interval_of) -> list[dict]:
    """The record rows of one (fact set, condition) summary: recall with its chance (the mean of the summarized rows'
    levels), and the answer's probability where every prompt has one. `interval_of(column)`: (mean, low, high)."""
    mean, lo, hi = interval_of("correct")
    rows = [{**common, "metric": f"{fact_set}.{cond}", "value": mean, "ci_low": lo, "ci_high": hi,
             "chance": float(chance.mean()) if len(chance) else np.nan}]
    if d.answer_prob.notna().all():
        measure, split = cond.split(".")
        mean, lo, hi = interval_of("answer_prob")
        rows.append({**common, "metric": f"{fact_set}.{measure}_answer_prob.{split}", "value": mean, "ci_low": lo, "ci_high": hi})
    return rows


def summarize_draws(per_item: "pd.DataFrame", draw_rows: "pd.DataFrame", n_bootstrap: int, seed: int) -> list[dict]:
    """Rows with seed 'all' and fact_draw 'all' for one arm trained (or scored) on several fact draws: per (fact
    set, condition) the mean of the draws' means with draw_bootstrap's interval (draws, then seeds and facts within
    each). `per_item` as summarize_seeds', with a fact_draw column; `draw_rows` are record rows of the draws (their
    chance levels are averaged). n_units and n_prompts are per draw (their largest); n_draws says how many."""
    out = []
    draws = sorted(per_item.fact_draw.unique())
    for (fact_set, cond), d in per_item.groupby(["facts", "condition"], sort=False):
        by_draw = {k: g for k, g in d.groupby("fact_draw", sort=True)}
        if sorted(by_draw) != draws:  # pragma: no cover - a condition scored on some draws only
            raise ValueError(f"{fact_set}.{cond} is scored on draws {sorted(by_draw)}, not on every draw {draws}")
        seeds = {k: sorted(g.seed.unique()) for k, g in by_draw.items()}
        metric = f"{fact_set}.{cond}"
        chance = draw_rows.loc[draw_rows.metric == metric, "chance"].astype(float)
        common = {"arm": d.arm.iloc[0], "seed": "all", "fact_draw": "all", "unit": "facts",
                  "n_units": max(g.city.nunique() for g in by_draw.values()),
                  "n_prompts": max(int(g.groupby("seed").size().iloc[0]) for g in by_draw.values()),
                  "n_seeds": max(len(s) for s in seeds.values()), "n_draws": len(draws), "interval": DRAW_INTERVAL}
        out += _summary_rows(common, fact_set, cond, d, chance, lambda column: draw_bootstrap(
            [_by_fact(g, column, seeds[k]) for k, g in by_draw.items()], n_bootstrap, seed))
    return out


def prompt_states(model, prompt_ids: list[list[int]], layers: list[int], batch_size: int = 64, pad_id: int = 0,
                  desc: str | None = None) -> dict[int, torch.Tensor]:
    """Hidden state at each prompt's last token (the position that predicts the answer), per layer index
    into hidden_states (0 = embeddings)."""
    last = hidden_states_at(model, prompt_ids, None, batch_size, pad_id, desc)["last"]
    return {layer: torch.from_numpy(last[:, layer]) for layer in layers}


def adversary_accuracy(model, probe, tokenizer, targets, questions, prompt_format, layer, batch_size, n_bootstrap, seed):
    """Accuracy of the training adversary (the paper's 'probe accuracy') per question split, chance 1/len(targets).
    Returns (rows, per-prompt rows) like evaluate_arm, with the condition 'adversary_probe_accuracy.<split>'."""
    rows, per_item = [], []
    for split in ("train", "heldout"):
        items = facts.build_items(tokenizer, targets, [q for q in questions if q.split == split], prompt_format)
        h = prompt_states(model, [i["prompt_ids"] for i in items], [layer], batch_size, tokenizer.pad_token_id)[layer]
        with torch.no_grad():
            pred = probe(h.to(next(probe.parameters()).device)).argmax(-1).cpu().numpy()
        labels = np.array([targets[i["fact"]]["label"] for i in items])
        correct = pred == labels
        by_fact = np.array([correct[[i["fact"] == f for i in items]].mean() for f in range(len(targets))])
        mean, lo, hi = bootstrap_ci(by_fact, n_bootstrap, seed)
        rows.append({"facts": "targets", "metric": f"adversary_probe_accuracy.{split}", "value": mean, "ci_low": lo,
                     "ci_high": hi, "chance": 1 / len(targets), "n_facts": len(targets), "n_prompts": len(items)})
        per_item += [{"facts": "targets", "condition": f"adversary_probe_accuracy.{split}", "city": i["city"],
                      "answer": i["answer"], "question_id": i["question_id"], "correct": bool(c), "answer_prob": np.nan}
                     for i, c in zip(items, correct)]
    return rows, per_item
