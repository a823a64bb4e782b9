"""The notebooks show each method's code as text, verbatim from the package (no inspect.getsource at run time)."""

import pytest

from rlcp_utils.methods import registry
from rlcp_utils.study import shown_code

NOTEBOOKS = shown_code.notebook_sources()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_shown_blocks_are_the_current_source(path):
    text = path.read_text()
    assert shown_code.render(text) == text, (f"{path.name} shows code that differs from the package: run "
                                             "`python -m rlcp_utils.study.shown_code` then `make notebooks`")
    assert "inspect.getsource" not in text


def test_every_method_is_shown_in_a_notebook():
    shown = {name for path in NOTEBOOKS for name in shown_code.shown(path.read_text())}
    for m in registry.METHODS.values():
        assert f"{m.loss.__module__}.{m.loss.__name__}" in shown, f"no notebook shows {m.name}'s loss"
    assert "rlcp_utils.methods.rlcp._GradReverse" in shown


def test_render_rewrites_a_stale_block_and_leaves_the_rest():
    text = ("# %% [markdown]\n# intro\n# <!-- shows: rlcp_utils.methods.rlcp.alpha_schedule -->\n# ```python\n"
            "# def alpha_schedule(p): return 0\n# ```\n# after\n")
    out = shown_code.render(text)
    assert "# def alpha_schedule(progress: float) -> float:" in out and "return 0" not in out
    assert out.startswith("# %% [markdown]\n# intro\n") and out.endswith("# ```\n# after\n")
    assert shown_code.render(out) == out
