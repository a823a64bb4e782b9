"""The code that the notebooks show as text, kept verbatim with the package.

A notebook's markdown shows a function of the package after a marker line, as a code block:

    <!-- shows: rlcp_utils.methods.rlcp.rlcp_loss -->
    ```python
    def rlcp_loss(...):
    ```

so a reader sees each method's loss before running anything (in Colab too, where no cell has run yet).
`python -m rlcp_utils.study.shown_code` rewrites every such block from the current source (then `make
notebooks` pairs the .ipynb); tests/test_shown_code.py fails when a block differs from the source.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

from rlcp_utils.core.config import REPO_ROOT

MARKER = re.compile(r"^# <!-- shows: ([\w.]+) -->$")


def source_of(dotted: str) -> str:
    """The source of a function or class named by its dotted path (module path, then the object's name)."""
    module, _, name = dotted.rpartition(".")
    return inspect.getsource(getattr(importlib.import_module(module), name)).rstrip("\n")


def _as_markdown(source: str) -> list[str]:
    return ["# ```python"] + [("# " + line).rstrip() if line else "#" for line in source.splitlines()] + ["# ```"]


def render(text: str) -> str:
    """The text of a percent-format notebook with every shown block rewritten from the source."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        out.append(lines[i])
        m = MARKER.match(lines[i])
        i += 1
        if not m:
            continue
        if i < len(lines) and lines[i] == "# ```python":  # drop the old block
            end = lines.index("# ```", i + 1)
            i = end + 1
        out += _as_markdown(source_of(m.group(1)))
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def shown(text: str) -> list[str]:
    """The dotted names a notebook shows."""
    return [m.group(1) for m in map(MARKER.match, text.splitlines()) if m]


def notebook_sources() -> list[Path]:
    return sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def main() -> int:
    changed = []
    for path in notebook_sources():
        text = path.read_text()
        new = render(text)
        if new != text:
            path.write_text(new)
            changed.append(path.name)
    print("rewritten:", ", ".join(changed) if changed else "none (every shown block matches its source)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
