"""The study's results record: one tidy CSV per notebook, one row per number.

    outputs/<profile>/results/<notebook>.csv        written only by that notebook (results.write)
    outputs/<profile>/jobs/<arm>/seed<k>/results.csv one training job's evaluation (training.jobs.run_job)

Columns (COLUMNS): which `notebook` wrote the row, the `arm` ('original' or a trained arm), the training
`seed` ('0', '1', ... for one trained model; 'all' for a summary over the seeds: mean and an interval that
includes the variation between seeds), the `fact_draw` it was measured on ('0', '1', ... for one draw of targets
and retain facts, data.facts; 'all' for a summary over the draws, the outer unit of its interval; draw 0 is the
study's, on which every analysis from 04 on runs; files written before draws existed are draw 0), the `metric`
(a dotted name, `<fact set>.<measure>.<template split>` for the recall metrics, e.g.
`targets.no_context_recall.heldout`), its `value`, the interval [`ci_low`, `ci_high`] and what it resamples
(`interval`), the `chance` level (empty where none applies), the number of units it averages (`n_units` of
`unit`: facts, cities, entities, problems; per draw), the prompts behind it (`n_prompts`, per seed), the number
of training seeds (`n_seeds`; 0 for the untrained original) and of fact draws (`n_draws`, 1 but for 'all' rows).

`load` reads every file into one DataFrame; Table 1, the claims, the report and the README blocks are views of
it (`summary`). A malformed file stops with its name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rlcp_utils.core.files import atomic_write_text

COLUMNS = ["notebook", "arm", "seed", "fact_draw", "metric", "value", "ci_low", "ci_high", "interval", "chance", "unit",
           "n_units", "n_prompts", "n_seeds", "n_draws"]
REQUIRED = ["notebook", "arm", "seed", "metric", "value"]
DTYPES = {"notebook": str, "arm": str, "seed": str, "fact_draw": str, "metric": str, "interval": str, "unit": str}
STUDY_DRAW = "0"  # the fact draw every analysis (04 onwards) and the benchmark run on; rows without one are of it


class ResultsFormatError(ValueError):
    """A results file that does not follow COLUMNS; the message names the file."""


def results_dir(profile) -> Path:
    return profile.output_dir / "results"


def frame(rows: list[dict], notebook: str) -> pd.DataFrame:
    """Rows as a DataFrame in the record's column order; `notebook` filled in, missing columns empty."""
    df = pd.DataFrame(rows)
    df["notebook"] = notebook
    for col in COLUMNS:
        if col not in df:
            df[col] = np.nan
    df["fact_draw"] = [_draw_label(v) for v in df["fact_draw"]]
    df["n_draws"] = df["n_draws"].fillna(1)
    extra = sorted(set(df.columns) - set(COLUMNS))
    if extra:
        raise ResultsFormatError(f"results of {notebook} have columns outside the record: {extra} (known: {COLUMNS})")
    df["seed"] = df["seed"].astype(str)
    for col in ["n_units", "n_prompts", "n_seeds", "n_draws"]:  # counts stay integers in the CSV (empty where unknown)
        df[col] = pd.to_numeric(df[col]).round().astype("Int64")
    return df[COLUMNS]


def _draw_label(value) -> str:
    """A row's fact draw as the record writes it: '0', '1', ... or 'all'; rows that name none are of the study's draw."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return STUDY_DRAW
    return value if isinstance(value, str) else str(int(value))


def analysis_row(profile, arm: str, metric: str, value, **fields) -> dict:
    """A row of an analysis notebook (04-07), which measures one model per arm: the original is untrained
    (seed 'all', 0 seeds); a trained arm is the model of the profile's first training seed (one seed)."""
    seed, n_seeds = ("all", 0) if arm == "original" else (str(profile["seeds"][0]), 1)
    return {"arm": arm, "seed": seed, "metric": metric, "value": float(value), "n_seeds": n_seeds, **fields}


def write(profile, notebook: str, rows: list[dict] | pd.DataFrame, path: Path | None = None) -> Path:
    """Write one notebook's rows (replacing its previous file); a notebook never edits another's file."""
    df = frame(rows.to_dict("records") if isinstance(rows, pd.DataFrame) else rows, notebook)
    _check(df, f"results of {notebook}")
    path = path or results_dir(profile) / f"{notebook}.csv"
    atomic_write_text(path, df.to_csv(index=False))
    return path


def _check(df: pd.DataFrame, source: str) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ResultsFormatError(f"{source}: missing columns {missing} (a results file has {COLUMNS})")
    empty = [c for c in REQUIRED if df[c].isna().any() or (df[c].astype(str) == "").any()]
    if empty:
        raise ResultsFormatError(f"{source}: empty values in required columns {empty}")
    for col in ["seed", "fact_draw"]:
        bad = ~df[col].astype(str).str.fullmatch(r"\d+|all")
        if bad.any():
            raise ResultsFormatError(f"{source}: {col} must be a number or 'all', got {df.loc[bad, col].iloc[0]!r}")
    try:
        for col in ["value", "ci_low", "ci_high", "chance", "n_units", "n_prompts", "n_seeds", "n_draws"]:
            pd.to_numeric(df[col], errors="raise")
    except (ValueError, TypeError) as err:
        raise ResultsFormatError(f"{source}: column {col!r} is not numeric ({err})") from None
    dup = df.duplicated(["notebook", "arm", "seed", "fact_draw", "metric"])
    if dup.any():
        r = df[dup].iloc[0]
        raise ResultsFormatError(f"{source}: the row ({r.arm}, seed {r.seed}, fact draw {r.fact_draw}, {r.metric}) appears twice")


def read(path: Path) -> pd.DataFrame:
    """One results file, checked."""
    try:
        df = pd.read_csv(path, dtype=DTYPES, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ResultsFormatError(f"{path}: not a readable CSV ({err})") from None
    if "fact_draw" not in df.columns:  # written before fact draws were a factor: every row is of the study's draw
        df.insert(COLUMNS.index("fact_draw"), "fact_draw", STUDY_DRAW)
    if "n_draws" not in df.columns:
        df["n_draws"] = 1
    _check(df, str(path))
    return df


def load(profile) -> pd.DataFrame:
    """Every notebook's results of a profile in one DataFrame (empty with COLUMNS when nothing ran yet)."""
    return load_dir(results_dir(profile))


def load_dir(folder: Path) -> pd.DataFrame:
    """Every results file of a folder in one DataFrame."""
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat([read(f) for f in files], ignore_index=True)


def summary(df: pd.DataFrame, fact_draw: str | None = None) -> pd.DataFrame:
    """One row per (arm, metric): the summary over fact draws and seeds where there is one (fact_draw 'all'),
    else the summary over seeds ('all'), else the single-seed row with the most seeds behind it. This is the view
    every table and claim reads. `fact_draw`: only the rows of that draw (STUDY_DRAW: what methods trained on the
    study's draw alone are compared on)."""
    if df.empty:
        return df
    if fact_draw is not None:
        df = df[df.fact_draw == fact_draw]
    ranked = df.assign(_draws=(df.fact_draw == "all"), _all=(df.seed == "all"), _n=pd.to_numeric(df.n_seeds, errors="coerce").fillna(0))
    ranked = ranked.sort_values(["_draws", "_all", "_n"], ascending=False)
    return (ranked.drop_duplicates(["arm", "metric"]).drop(columns=["_draws", "_all", "_n"])
            .set_index(["arm", "metric"]).sort_index())


def seed_range(df: pd.DataFrame, arm: str, metric: str, fact_draw: str | None = None) -> tuple[float, float] | None:
    """Smallest and largest per-seed value of one metric (over every fact draw's seeds, or one draw's), or None
    when it has fewer than two."""
    v = df[(df.arm == arm) & (df.metric == metric) & (df.seed != "all")]
    if fact_draw is not None:
        v = v[v.fact_draw == fact_draw]
    v = v.value.astype(float)
    return (float(v.min()), float(v.max())) if len(v) >= 2 else None


def draw_values(df: pd.DataFrame, arm: str, metric: str) -> dict[int, float]:
    """Each fact draw's summary over seeds of one metric ({draw: value}); empty when the metric has one draw."""
    d = df[(df.arm == arm) & (df.metric == metric) & (df.seed == "all") & (df.fact_draw != "all")]
    values = {int(r.fact_draw): float(r.value) for r in d.itertuples()}
    return values if len(values) >= 2 else {}
