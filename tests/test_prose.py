"""The prose renderer on a hand-made record: each placeholder's number, and a missing row stops it."""

import pandas as pd
import pytest

from rlcp_utils.core import results
from rlcp_utils.study import prose


def _record():
    rows = [  # rlcp: two draws x two seeds, their draw summaries and the summary over draws; rmu: a ratio
        *({"arm": "rlcp", "seed": str(s), "fact_draw": str(d), "value": v} for (d, s), v in
          {(0, 0): 0.80, (0, 1): 0.90, (1, 0): 0.60, (1, 1): 0.70}.items()),
        {"arm": "rlcp", "seed": "all", "fact_draw": "0", "value": 0.85, "ci_low": 0.80, "ci_high": 0.90, "n_seeds": 2},
        {"arm": "rlcp", "seed": "all", "fact_draw": "1", "value": 0.65, "ci_low": 0.60, "ci_high": 0.70, "n_seeds": 2},
        {"arm": "rlcp", "seed": "all", "fact_draw": "all", "value": 0.75, "ci_low": 0.61, "ci_high": 0.894, "n_seeds": 2, "n_draws": 2},
    ]
    frame = pd.DataFrame([{"metric": "targets.rag_accuracy.heldout", "chance": 0.0, "unit": "facts", "n_units": 15, "n_prompts": 45, **r} for r in rows])
    ratio = pd.DataFrame([{"arm": "rmu", "seed": "0", "fact_draw": "0", "metric": "lm_loss_ratio", "value": 1.0712,
                           "ci_low": 1.07, "ci_high": 1.081, "unit": "texts", "n_units": 50, "n_seeds": 1}])
    return results.frame(pd.concat([frame, ratio]).to_dict("records"), "08_unlearning")


def test_each_placeholder_mode_writes_its_number():
    record = _record()
    key = "rlcp:targets.rag_accuracy.heldout"
    assert prose.render(f"a {{{{{key}}}}} b", record) == "a 75.0% [61%, 89%]; draws 85% / 65%; seeds 60%–90% b"
    assert prose.render(f"{{{{{key}:value}}}}", record) == "75.0%"
    assert prose.render(f"{{{{{key}:draw=1}}}}", record) == "65.0% [60%, 70%]; seeds 60%–70%"
    assert prose.render(f"{{{{{key}:n}}}}", record) == "15 facts, 45 prompts, 2 seeds, 2 fact draws"
    assert prose.render("{{rmu:lm_loss_ratio:ratio}}", record) == "1.07 [1.07, 1.08]"
    assert prose.render("{{rmu:lm_loss_ratio:int}}", record) == "1"
    assert prose.render(f"{{{{{key}:chance}}}}", record) == "0.0%"


def test_a_row_the_record_lacks_or_an_unknown_mode_stops_the_rendering():
    with pytest.raises(KeyError, match="npo:targets.rag_accuracy.heldout"):
        prose.render("{{rlcp:targets.rag_accuracy.heldout}} and {{npo:targets.rag_accuracy.heldout}}", _record())
    with pytest.raises(ValueError, match="one of value, n, ratio, int, chance"):
        prose.render("{{rlcp:targets.rag_accuracy.heldout:mean}}", _record())


TEMPLATES = sorted(prose.TEMPLATES.glob("*.md"))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_each_generated_document_is_its_template_rendered_from_the_committed_record(template):
    """Whether or not the record is current (make check), the committed document is what its template and the
    committed record give: no number in it is typed."""
    from rlcp_utils.core.config import REPO_ROOT

    document = REPO_ROOT / "docs" / template.name
    assert document.read_text() == prose.rendered_documents("default")[document], f"run `make prose`: {document.name} differs"
