"""Files written so that a crash never leaves half of one: atomic writes (temporary file + rename) of a file or
a whole folder, with the permissions the umask gives any new file (a temporary file is created 0600, and a
results folder that others cannot read is no use on a shared machine or a web server). The bottom of the
package: every module that writes imports it, and it imports nothing of the package.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def readable(path: Path, folder: bool = False) -> None:
    """Give a file (0666) or folder (0777) made by mkstemp/mkdtemp (0600/0700) the permissions that the
    umask gives any new file or folder."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        readable(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def read_json(path: Path, default=None):
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


@contextlib.contextmanager
def folder_written_atomically(folder: Path):
    """Yield a temporary folder beside `folder`; on success it replaces `folder`, on error it is removed."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        readable(tmp, folder=True)  # mkdtemp makes it 0700
        for f in tmp.rglob("*"):
            if f.is_file():
                readable(f)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
