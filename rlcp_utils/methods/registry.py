"""The one list of arms: every training method the study compares, with its loss, its weights from the
profile, the notebook its jobs belong to and whether it needs the benchmark's FieldInputs.

Every arm trains through the same loop (training/loop.py) on the same TrainingInputs, budget and seeds;
they differ only by the loss function named here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rlcp_utils.core.config import BENCHMARK_ARMS, PAPER_ARMS
from rlcp_utils.methods import (
    grad_diff,
    just_rag,
    npo,
    rlcp,
    rmu,
    selective_rlcp,
    unlikelihood,
)


@dataclass(frozen=True)
class Method:
    name: str
    loss: Callable           # loss(model, probe, step: common.Step, weights) -> {'total': ..., logged terms}
    weights: Callable        # weights(params) -> the method's typed weights
    notebook: str            # the notebook whose results this arm's jobs are
    uses_field: bool = False  # needs a training retain batch and the frozen model's references (FieldInputs)
    description: str = ""


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("just_rag", just_rag.just_rag_loss, just_rag.weights, "02_baselines",
           description="paper Group B: L_RAG + KL, no forgetting"),
    Method("unlikelihood", unlikelihood.unlikelihood_loss, unlikelihood.weights, "02_baselines",
           description="paper Group C: L_L + KL, no survival stream"),
    Method("rlcp", rlcp.rlcp_loss, rlcp.weights, "03_rlcp_training",
           description="Algorithm 1: L_RAG + adversary behind a GRL + L_L + KL"),
    Method("selective_rlcp", selective_rlcp.selective_rlcp_loss, selective_rlcp.weights, "08_unlearning", True,
           description="RLCP with a bounded forget term and a retain stream"),
    Method("grad_diff", grad_diff.grad_diff_loss, grad_diff.weights, "08_unlearning", True,
           description="forget NLL ascent + retain NLL"),
    Method("npo", npo.npo_method_loss, npo.weights, "08_unlearning", True,
           description="NPO on the forget answers + retain NLL"),
    Method("rmu", rmu.rmu_loss, rmu.weights, "08_unlearning", True,
           description="steer a middle layer on forget prompts, keep it on retain prompts"),
]}

if tuple(METHODS) != PAPER_ARMS + BENCHMARK_ARMS or any(METHODS[a].uses_field for a in PAPER_ARMS):
    raise RuntimeError(f"methods/registry.py lists {tuple(METHODS)}; core/config.py names {PAPER_ARMS + BENCHMARK_ARMS}")


def method(arm: str) -> Method:
    if arm not in METHODS:
        raise ValueError(f"unknown arm {arm!r} (use one of {', '.join(METHODS)})")
    return METHODS[arm]
