"""Writing an output folder so that nothing is half-written or lost: build it in a staging folder beside the
target, then swap it into place; an existing target is removed only once the new one is in place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recon.errors import InputError


def check_writable(target: Path, overwrite: bool) -> None:
    """Refuse to replace a file, or a non-empty folder without `overwrite`."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise InputError(f"{target}: exists and is a file; choose another output folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise InputError(f"{target}: exists and is not empty; pass --overwrite or choose another output folder")


def replace_folder(new: Path, target: Path) -> None:
    """Move folder `new` to `target`, replacing whatever folder is there only after the move succeeded."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old / target.name, target)  # put the previous output back; if this fails, old/ keeps it
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside `target` to write into; on success it becomes `target`, on any error (or
    Ctrl-C) it is deleted and `target` is left as it was."""
    target = Path(target)
    check_writable(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield staging
        check_writable(target, overwrite)  # someone may have written there meanwhile
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
