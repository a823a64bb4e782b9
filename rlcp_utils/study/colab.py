"""Colab, one click per notebook: the setup cell every notebook starts with, and the repository's address in one place
(`[project.urls] Repository` in pyproject.toml).

    python -m rlcp_utils.study.colab      # rewrites every notebook's setup cell and Colab badge, and the README's badges

A badge opens `https://colab.research.google.com/github/<owner>/<repo>/blob/main/notebooks/<notebook>.ipynb` in a
fresh runtime that has none of the study. The setup cell (SETUP_CELL) clones the repository (shallow, its main
branch: the commit the badge's notebook belongs to), so the committed results of the earlier notebooks are there;
installs what Colab lacks from pyproject.toml (torch is unpinned there, so Colab keeps its own) and the offline model;
and works inside the clone. `notebook.start` then builds, with the pipeline, any earlier result the notebook reads
that is missing. tests/test_notebooks.py fails when a notebook or the README disagrees with this module (then run it
and `make notebooks`); tests/test_colab.py runs the cell against a local clone.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from rlcp_utils.core.config import REPO_ROOT

_REPOSITORY = re.compile(r'^\s*Repository\s*=\s*"https://github\.com/([^/"]+/[^/"]+?)/?"\s*$', re.M)
_BADGE = re.compile(r"(https://colab\.research\.google\.com/github/)[^/\s)]+/[^/\s)]+(/blob/main/notebooks/)")
# the setup cell of a notebook's .py twin: from its first line to the next cell
_SETUP = re.compile(r"^# %%\n# Colab setup.*?(?=^# %%)", re.M | re.S)
# what the tests and a user elsewhere set to run the cell outside Colab, and to clone another repository
COLAB_ENV, REPOSITORY_ENV = "RLCP_COLAB", "RLCP_REPOSITORY"

SETUP_CELL = '''# %%
# Colab setup (does nothing elsewhere). A Colab badge opens this notebook alone in a fresh runtime: clone the study
# (the committed results of the earlier notebooks come with it), install what Colab lacks (pyproject.toml leaves
# torch unpinned, so Colab keeps its own), and work inside the clone. Earlier results this notebook needs and the
# clone lacks are built by the pipeline when the notebook starts. RLCP_COLAB=1 runs this cell outside Colab too.
import os
import subprocess
import sys

# (Not in the kernels the pipeline starts inside the clone: they are already there.)
if ("google.colab" in sys.modules or os.environ.get("RLCP_COLAB") == "1") and os.environ.get("RLCP_PIPELINE_RUN") != "1":
    import tomllib

    # names with a leading underscore: notebook.start takes every other plain name here for a parameter;
    # the clone's place is kept in the environment, so running this cell again finds it from any folder
    _checkout = os.environ.setdefault("RLCP_CHECKOUT", os.path.abspath("rlcp"))
    if not os.path.isdir(os.path.join(_checkout, ".git")):
        _repository = os.environ.get("RLCP_REPOSITORY", "https://github.com/{slug}")
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", _repository, _checkout], check=True)
    with open(os.path.join(_checkout, "pyproject.toml"), "rb") as _file:
        _needs = tomllib.load(_file)["project"]["dependencies"]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *_needs], check=True)
    subprocess.run([sys.executable, "-m", "rlcp_utils.core.model"], cwd=_checkout, check=True)  # the offline model
    sys.path.insert(0, _checkout)  # this kernel, the pipeline and its kernels all import the clone's rlcp_utils
    os.environ["PYTHONPATH"] = _checkout
    os.chdir(os.path.join(_checkout, "notebooks"))
    _commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_checkout, capture_output=True, text=True)
    print(f"working in {{_checkout}} at commit {{_commit.stdout.strip()}}")

'''


def repository_slug(pyproject: Path | None = None) -> str:
    """'owner/repo' from pyproject.toml's [project.urls] Repository."""
    text = (pyproject or REPO_ROOT / "pyproject.toml").read_text()
    found = _REPOSITORY.search(text)
    if found is None:
        raise ValueError("pyproject.toml has no [project.urls] Repository = \"https://github.com/<owner>/<repo>\"")
    return found.group(1)


def setup_cell(slug: str) -> str:
    """The setup cell (jupytext percent format) that clones github.com/<slug>."""
    return SETUP_CELL.format(slug=slug)


def render(text: str, slug: str) -> str:
    """`text` (a notebook's .py twin or the README) with every Colab badge pointing at github.com/<slug> and its
    setup cell, where it has one, written from SETUP_CELL."""
    text = _BADGE.sub(rf"\g<1>{slug}\g<2>", text)
    return _SETUP.sub(lambda _: setup_cell(slug), text, count=1)


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
