"""The repository's address in one place (`[project.urls] Repository` in pyproject.toml) and every Colab badge and
Colab setup cell written from it.

    python -m rlcp_utils.study.colab      # rewrites the badges and install lines of notebooks/*.py and README.md

A badge opens `https://colab.research.google.com/github/<owner>/<repo>/blob/main/notebooks/<notebook>.ipynb`; a
setup cell installs `rlcp @ git+https://github.com/<owner>/<repo>`. tests/test_notebooks.py fails when a notebook
or the README names another address than pyproject's (then run this module and `make notebooks`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from rlcp_utils.core.config import REPO_ROOT

_REPOSITORY = re.compile(r'^\s*Repository\s*=\s*"https://github\.com/([^/"]+/[^/"]+?)/?"\s*$', re.M)
_BADGE = re.compile(r"(https://colab\.research\.google\.com/github/)[^/\s)]+/[^/\s)]+(/blob/main/notebooks/)")
_INSTALL = re.compile(r"(git\+https://github\.com/)[^/\s\"']+/[^/\s\"']+?(?=[\"'\s])")


def repository_slug(pyproject: Path | None = None) -> str:
    """'owner/repo' from pyproject.toml's [project.urls] Repository."""
    text = (pyproject or REPO_ROOT / "pyproject.toml").read_text()
    found = _REPOSITORY.search(text)
    if found is None:
        raise ValueError("pyproject.toml has no [project.urls] Repository = \"https://github.com/<owner>/<repo>\"")
    return found.group(1)


def render(text: str, slug: str) -> str:
    """`text` with every Colab badge and git+ install line pointing at github.com/<slug>."""
    return _INSTALL.sub(rf"\g<1>{slug}", _BADGE.sub(rf"\g<1>{slug}\g<2>", text))


def targets() -> list[Path]:
    return sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.py")) + [REPO_ROOT / "README.md"]


def main() -> int:
    slug = repository_slug()
    changed = []
    for path in targets():
        text = path.read_text()
        new = render(text, slug)
        if new != text:
            path.write_text(new)
            changed.append(path.name)
    print(f"github.com/{slug}: " + (f"rewritten {', '.join(changed)} (then run make notebooks)" if changed else "every badge and setup cell agrees"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
