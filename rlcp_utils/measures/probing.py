"""Post-hoc probes and representation geometry: is a fact still in the hidden states?

Probes here are always trained fresh, after training, on held-out data, never the training adversary
(Elazar & Goldberg 2018: an adversary at chance does not mean a fresh classifier fails).
- `hidden_states_at` (measures/states.py): hidden states of every layer at chosen token positions (the last
  prompt token, which predicts the answer, or the last token of the city's name).
- `linear_probe` / `mlp_probe`: scikit-learn classifiers on standardised states; the linear probe's
  regularisation is chosen by cross-validation over groups (templates or cities), so it is tuned for the
  kind of generalisation it is then tested on.
- `country_probe_on_targets`: the country probe tested on the target cities, one rule for the three notebooks that
  measure it (04: the paper's arms, 10: the benchmark's, 13: its settings), with `country_held_out`'s splits;
  `country_probe_prompts` gives 04, 10 and 13 its prompts, `country_probe_of_model` gives 10 and 13 one model's
  outcomes.
- `control_labels`: Hewitt & Liang's control task, a random label per group (city), kept across templates;
  selectivity = accuracy on the real task minus accuracy on the control task.
- `logit_lens`: the unembedding of an intermediate state, read as the model's answer at that layer.
- `type_geometry`: how far entities sit from their type's centroid, relative to the spread between types.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import silhouette_score
from sklearn.model_selection import GroupKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rlcp_utils.core.batching import batches
from rlcp_utils.core.progress import track
from rlcp_utils.data.facts import build_items, last_token_of  # last_token_of re-exported: notebooks read states at the city token
from rlcp_utils.measures.states import hidden_states_at  # noqa: F401 (re-exported: the probes' input)

# --- states ---------------------------------------------------------------------------------------------


@torch.no_grad()
def logit_lens(model, states: np.ndarray, answer_token: list[int], batch_size: int = 256) -> dict[str, np.ndarray]:
    """Read each layer's state through the final norm and the unembedding (nostalgebraist's logit lens).
    states: [n, n_layers + 1, hidden]; answer_token: the first token of each prompt's answer.
    Returns per layer the mean probability of the answer token and the fraction of prompts where it is the
    top token. hidden_states[-1] already has the final norm applied (transformers), so it is not re-normed."""
    device = next(model.parameters()).device
    n, n_layers, _ = states.shape
    prob = np.zeros((n, n_layers))
    top1 = np.zeros((n, n_layers), dtype=bool)
    target = torch.tensor(answer_token, device=device)
    for layer in range(n_layers):
        for idx in batches(n, batch_size):
            h = torch.as_tensor(states[idx.start:idx.stop, layer], device=device, dtype=next(model.parameters()).dtype)
            if layer < n_layers - 1:
                h = model.model.norm(h)
            p = torch.softmax(model.lm_head(h).float(), dim=-1)
            t = target[idx.start:idx.stop]
            prob[idx.start:idx.stop, layer] = p.gather(1, t[:, None])[:, 0].cpu().numpy()
            top1[idx.start:idx.stop, layer] = (p.argmax(-1) == t).cpu().numpy()
    return {"answer_prob": prob, "answer_top1": top1}


# --- probes ---------------------------------------------------------------------------------------------


def linear_probe(X_train, y_train, groups_train, X_test, seed: int = 0,
                 Cs: tuple[float, ...] = (1e-2, 1e-1, 1.0)) -> np.ndarray:
    """Multinomial logistic regression on standardised states; the inverse regularisation C is chosen by
    cross-validation with folds that hold out whole groups (templates or cities). Returns test predictions."""
    if len(np.unique(y_train)) < 2:
        return _only_class(y_train, X_test)
    n_folds = min(3, len(np.unique(groups_train)))
    with warnings.catch_warnings():
        # small data: lbfgs may stop at max_iter; scikit-learn's deprecation notices are not ours to act on
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if n_folds < 2:  # one group: nothing to cross-validate over
            clf = LogisticRegression(C=1.0, max_iter=300)
        else:
            folds = list(GroupKFold(n_splits=n_folds).split(X_train, y_train, groups_train))
            clf = LogisticRegressionCV(Cs=list(Cs), cv=folds, max_iter=300, random_state=seed)
        model = make_pipeline(StandardScaler(), clf).fit(X_train, y_train)
    return model.predict(X_test)


def mlp_probe(X_train, y_train, X_test, seed: int = 0, hidden: int = 128, alpha: float = 1e-2) -> np.ndarray:
    """A one-hidden-layer MLP (ReLU, L2 penalty alpha), a nonlinear probe of modest capacity."""
    if len(np.unique(y_train)) < 2:
        return _only_class(y_train, X_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(hidden,), alpha=alpha, max_iter=500,
                                                              random_state=seed)).fit(X_train, y_train)
    return model.predict(X_test)


def fit_predict(kind: str, X_train, y_train, groups_train, X_test, seed: int = 0) -> np.ndarray:
    """One probe fit, by kind ('linear' or 'mlp'): a top-level function, so joblib can run many in parallel."""
    if kind == "linear":
        return linear_probe(X_train, y_train, groups_train, X_test, seed)
    if kind == "mlp":
        return mlp_probe(X_train, y_train, X_test, seed)
    raise ValueError(f"unknown probe kind {kind!r} (use 'linear' or 'mlp')")


def fit_predict_many(jobs: list[tuple], n_jobs: int = -1, desc: str | None = None) -> list[np.ndarray]:
    """fit_predict over many (kind, X_train, y_train, groups_train, X_test, seed) jobs, one process per core:
    hundreds of small fits (layers x arms x tasks) are CPU-bound and independent."""
    results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(fit_predict)(*job) for job in jobs)
    return list(track(results, desc, total=len(jobs)))


def _only_class(y_train, X_test) -> np.ndarray:
    """Training labels of a single class (a control draw on few cities can give one): every classifier
    predicts that class; scikit-learn's refuse to fit."""
    return np.full(len(X_test), np.asarray(y_train)[0])


def country_held_out(cities_by_country: dict[str, list[str]], seed: int) -> set[str]:
    """The other cities that one split of the country probe holds out of its training (04 tests on them too): one
    city, drawn with `seed`, of each country that has two or more, the countries taken in alphabetical order."""
    rng = np.random.default_rng(seed)
    return {str(rng.choice(sorted(cities))) for _, cities in sorted(cities_by_country.items()) if len(cities) >= 2}


def country_probe_on_targets(X: np.ndarray, labels: np.ndarray, cities: np.ndarray, countries: np.ndarray,
                             is_target: np.ndarray, n_splits: int, seed: int, n_jobs: int = -1) -> pd.DataFrame:
    """The linear country probe on the target cities, for one model at one position and layer. X: a state per
    prompt; labels, cities, countries: each prompt's country class, city and country; the prompts of is_target are
    tested, the others (other cities of the same countries) train. Split i trains on the other cities less
    country_held_out(..., seed + i), its cross-validation seeded with i: 04's splits, so an arm's number is the
    same in every notebook that measures it (the fits run the way 04's do: fit_predict_many's worker processes).
    One row per (split, target prompt): split, city, label, correct."""
    other = ~is_target
    by_country = pd.Series(cities[other]).groupby(countries[other]).unique().to_dict()
    fits = []
    for i in range(n_splits):
        train = other & ~np.isin(cities, sorted(country_held_out(by_country, seed + i)))
        fits.append(("linear", X[train], labels[train], cities[train], X[is_target], i))
    return pd.concat([pd.DataFrame({"split": i, "city": cities[is_target], "label": labels[is_target], "correct": pred == labels[is_target]})
                      for i, pred in enumerate(fit_predict_many(fits, n_jobs=n_jobs))], ignore_index=True)


@dataclass(frozen=True)
class CountryProbePrompts:
    """The country probe's prompts: every target city, then every other known city of a target country (01's probe
    cities), under every question template, context-free, in the study's prompt format. A prompt's label is the index
    of the target fact with its country (as many classes as targets: chance 1 / len(targets))."""
    items: list[dict]
    city_position: list[int]  # the last token of the city's name in each prompt
    label: np.ndarray
    city: np.ndarray
    country: np.ndarray
    is_target: np.ndarray


def country_probe_prompts(tokenizer, study) -> CountryProbePrompts:
    """The prompts of 04's country probe for the study's targets and probe cities (a data.facts.StudyData)."""
    items = build_items(tokenizer, study.targets + study.probe_cities, study.questions, study.prompt_format)
    label_of = {t["country"]: t["label"] for t in study.targets}
    plain = study.prompt_format == "plain"  # a plain prompt starts with the tokenizer's special tokens
    return CountryProbePrompts(
        items=items, city_position=[last_token_of(tokenizer, i["prompt"], i["city"], add_special_tokens=plain) for i in items],
        label=np.array([label_of[i["country"]] for i in items]), city=np.array([i["city"] for i in items]),
        country=np.array([i["country"] for i in items]), is_target=np.array([i["fact"] < len(study.targets) for i in items]))


def country_probe_of_model(model, prompts: CountryProbePrompts, layer: int, n_splits: int, seed: int, batch_size: int,
                           pad_token_id: int) -> pd.DataFrame:
    """country_probe_on_targets for one model at `layer`, at the city's last token and at the last prompt token: one
    row per (position, split, target prompt) with position, split, city, label, correct."""
    states = hidden_states_at(model, [i["prompt_ids"] for i in prompts.items], {"city": prompts.city_position}, batch_size,
                              pad_token_id)
    return pd.concat([country_probe_on_targets(states[pos][:, layer], prompts.label, prompts.city, prompts.country,
                                               prompts.is_target, n_splits, seed).assign(position=pos)
                      for pos in ["city", "last"]], ignore_index=True)


def control_labels(groups: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """Hewitt & Liang's control task: each group (city) gets a random class, the same under every template.
    A probe that does as well on these as on the real labels is reading which city was named, not a
    property of it."""
    uniq = np.unique(groups)
    table = dict(zip(uniq, np.random.default_rng(seed).integers(0, n_classes, size=len(uniq))))
    return np.array([table[g] for g in groups])


# --- geometry of entity types -----------------------------------------------------------------------------


def states_coincide(X: np.ndarray, rtol: float = 1e-6) -> bool:
    """True when every state is the same vector up to float rounding: at the embedding layer (0) the last
    token of every question prompt is the same token, so all its states are one vector."""
    scale = np.abs(X).max()
    return bool(scale == 0 or np.abs(X - X[0]).max() <= rtol * scale)


def type_geometry(X: np.ndarray, types: np.ndarray) -> dict[str, float]:
    """How tightly entities cluster by type, on one layer's states X [n, d] with a type label per row.
    - within_to_between: mean distance of a point to its type's centroid divided by the mean distance
      between type centroids. Collapse into type centroids drives it towards 0.
    - silhouette: scikit-learn's silhouette of the type labels (Euclidean), in [-1, 1].
    Both are undefined (NaN) when all states coincide: every distance is 0, and the mean of identical float32
    rows can differ from them by rounding, which would turn 0 / 0 into inf."""
    if states_coincide(X):
        return {"within_to_between": float("nan"), "silhouette": float("nan")}
    kinds = np.unique(types)
    centroids = np.stack([X[types == k].mean(0) for k in kinds])
    within = np.mean([np.linalg.norm(X[types == k] - c, axis=1).mean() for k, c in zip(kinds, centroids)])
    between = np.mean([np.linalg.norm(centroids[i] - centroids[j]) for i in range(len(kinds)) for j in range(i + 1, len(kinds))])
    return {"within_to_between": float(within / between), "silhouette": float(silhouette_score(X, types))}


def identity_nearest_neighbour(X: np.ndarray, entity: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Leave-one-frame-out nearest neighbour (cosine): for each state, is its nearest state under the
    *other* frames (sentence templates) the same entity? Per-row booleans; chance = 1 / (entities of the type
    compared against). Needs no training, so capacity cannot inflate it. As floats, NaN for every row when
    all states coincide (every neighbour is a tie)."""
    if states_coincide(X):
        return np.full(len(X), np.nan)
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    sim = Z @ Z.T
    same_frame = frame[:, None] == frame[None, :]
    sim[same_frame] = -np.inf  # compare only across frames (this also removes the point itself)
    return (entity[sim.argmax(1)] == entity).astype(float)
