"""Atomic output: a report directory appears complete or not at all.

Everything is written into a hidden sibling `.NAME.tmp-PID-XXXX`, which is renamed onto `NAME` only after the
last file (the manifest) is written; an exception or Ctrl-C removes the temporary directory. A previous report at
`NAME` is swapped out by rename and then deleted, so readers see the old report or the new one, never a mix.
Only a directory that is empty or holds a previous report (its manifest) is ever replaced.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

MANIFEST = "manifest.json"
MANIFEST_KIND = "pagedlab-compare"


def write_text_atomic(path: Path, text: str) -> None:
    """Write to `path.tmp-...` then rename, so `path` never holds half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_manifest(directory: Path, info: dict[str, Any]) -> None:
    """The last file of a report: its kind, the files it lists, and whatever `info` says (command, seed...)."""
    files = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    write_text_atomic(directory / MANIFEST, json.dumps({"kind": MANIFEST_KIND, **info, "files": files}, indent=2))


def _replaceable(path: Path) -> bool:
    if not path.exists():
        return True
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    try:
        return json.loads((path / MANIFEST).read_text()).get("kind") == MANIFEST_KIND
    except (OSError, ValueError, AttributeError):
        return False


def check_output_dir(path: Path) -> None:
    """Raise a one-line OSError unless `path` is absent, empty, or a previous report."""
    if not _replaceable(path):
        raise OSError(f"out: {path} exists and is not a pagedlab compare report; give an empty or new --out")


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes `path` when the block finishes without an exception."""
    final = Path(path).resolve()
    check_output_dir(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}"
    tmp.mkdir()
    try:
        yield tmp
        check_output_dir(final)  # something may have appeared there while we ran
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}-{secrets.token_hex(3)}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
