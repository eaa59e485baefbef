"""Paths read from files the user did not write stay inside the folder the user named.

A dataset's `data.jsonl` or a checkpoint's directory comes from someone else. If its entries could
say `../../home/me/photo.png`, an absolute path, or be a symlink pointing elsewhere, smalto would
read files the user never handed it into a model (and its "not found" / "not an image" messages
would tell the author which files exist). `inside` resolves every such path (symlinks followed)
and refuses, before touching the file, anything that lands outside its folder.
"""

from __future__ import annotations

from pathlib import Path

from smalto.errors import SmaltoError


def inside(root: str | Path, name: str | Path, what: str = "path") -> Path:
    """`root / name` resolved, if it stays inside `root`; else a SmaltoError naming `name`.

    The answer depends only on where the path points, never on whether a file is there."""
    root = Path(root)
    if "\0" in str(name):  # (no file system takes it; realpath would raise)
        raise SmaltoError(f"{what} {str(name)!r} holds a NUL byte; no file has such a name")
    if Path(name).is_absolute():
        raise SmaltoError(f"{what} {str(name)!r} is an absolute path; it must be relative to {root}")
    try:
        base = root.resolve()
        target = (base / name).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, an unreadable directory
        raise SmaltoError(f"{what} {str(name)!r} cannot be resolved inside {root} ({e})") from None
    if not target.is_relative_to(base):
        raise SmaltoError(f"{what} {str(name)!r} points outside {root} (through '..' or a symlink); refused")
    return target
