"""Atomic output: a report directory appears complete or not at all.

Everything is written into a hidden sibling `.NAME.tmp-PID-XXXX`, which is renamed onto `NAME` only after the
last file (the manifest) is written; an exception, Ctrl-C or SIGTERM removes the temporary directory. A previous
report at `NAME` is swapped out by rename and then deleted, so readers see the old report or the new one, never a
mix. Only a directory that holds a previous report of the same kind (its manifest names the command: a
`compare` never replaces a `validate` report, nor the reverse) is ever replaced; an empty directory is filled in
place (the manifest last), and anything else is refused.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sim.result import check_makeable

MANIFEST = "manifest.json"
COMPARE_KIND = "pagedlab-compare"
VALIDATE_KIND = "pagedlab-validate"
# the command that writes each kind (for messages); a sweep's manifest kind is its own (analysis.sweep)
KIND_COMMANDS = {COMPARE_KIND: "compare", VALIDATE_KIND: "validate", "pagedlab-sweep": "sweep"}


def write_text_atomic(path: Path, text: str) -> None:
    """Write to `path.tmp-...` then rename, so `path` never holds half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_manifest(directory: Path, info: dict[str, Any], kind: str = COMPARE_KIND) -> None:
    """The last file of a report: its kind, the files it lists, and whatever `info` says (command, seed...)."""
    files = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    write_text_atomic(directory / MANIFEST, json.dumps({"kind": kind, **info, "files": files}, indent=2))


def report_kind(path: Path) -> str | None:
    """The kind its manifest names, or None (no manifest, or not one of ours)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        kind = manifest.get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    if kind == COMPARE_KIND and "cases" in manifest:  # a validation report written when both shared one kind
        return VALIDATE_KIND
    return kind if isinstance(kind, str) else None


def _is_report(path: Path, kind: str) -> bool:
    return report_kind(path) == kind


def check_output_dir(path: Path, kind: str = COMPARE_KIND) -> None:
    """Raise a one-line OSError (`path: out: reason`) unless `path` is absent (and can be made), an empty
    directory we may write into, or a previous report of this `kind`."""
    if path.exists():
        if not path.is_dir():
            raise OSError(f"{path}: out: exists and is not a directory")
        found = report_kind(path)
        if found == kind:
            return
        if found in KIND_COMMANDS:
            raise OSError(f"{path}: out: holds a `pagedlab {KIND_COMMANDS[found]}` report, which `pagedlab "
                          f"{KIND_COMMANDS[kind]}` does not replace; give another --out")
        if any(path.iterdir()):
            raise OSError(f"{path}: out: exists, holds other files and is not an earlier pagedlab report (no "
                          f"{MANIFEST}); give an empty or new --out")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OSError(f"{path}: out: the directory exists and is not writable (permission denied)")
        return
    existing = next(p for p in path.parents if p.exists())
    if not existing.is_dir():
        raise OSError(f"{existing}: out: not a directory, so {path} cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OSError(f"{existing}: out: not writable (permission denied), so {path} cannot be made")
    check_makeable(path)


@contextmanager
def atomic_directory(path: str | Path, kind: str = COMPARE_KIND) -> Iterator[Path]:
    """Yield a temporary directory that becomes `path` (a report of `kind`) when the block finishes without
    an exception.

    An empty directory the user made is never replaced (its owner and permissions stay): the files
    are moved into it at the end, the manifest last."""
    final = Path(path).resolve()
    check_output_dir(final, kind)
    in_place = final.is_dir() and not _is_report(final, kind)
    final.parent.mkdir(parents=True, exist_ok=True)
    base = final if in_place else final.parent
    tmp = base / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}"
    tmp.mkdir()
    try:
        yield tmp
        if in_place:
            if any(p != tmp for p in final.iterdir()):
                raise OSError(f"{final}: out: files appeared there while the report was written; give a new --out")
            entries = sorted(tmp.iterdir(), key=lambda p: p.name == MANIFEST)  # the manifest last
            for entry in entries:
                os.replace(entry, final / entry.name)
            tmp.rmdir()
            return
        check_output_dir(final, kind)  # something may have appeared there while we ran
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
