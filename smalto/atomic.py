"""Atomic writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

# mkstemp/mkdtemp create private (0600/0700) entries; outputs should get the usual permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and move it into place only on success.

    If the block raises, nothing is left at `path` (and an existing one is untouched), so a
    half-written output can never look complete. Replacing an existing directory is atomic where
    the system can swap two directories (Linux): at every instant `path` holds the old directory
    or the new one, even if the process is killed. Elsewhere the old one is parked beside `path`
    for an instant, and `recover(path)` (which every reader of checkpoints calls) moves it back
    if a kill came at that instant.
    """
    path = Path(path)
    recover(path)
    if path.exists() and not overwrite:
        from smalto.errors import SmaltoError

        raise SmaltoError(f"{path}: already exists (pass --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        _publish(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover(path: str | Path) -> None:
    """If a writer was killed after parking the old `path` and before moving the new one in, put
    the old one back. A no-op otherwise (and where directories are swapped atomically)."""
    path = Path(path)
    parked = _parked(path)
    if parked.is_dir() and not path.exists():
        os.replace(parked, path)
        _fsync_dir(path.parent)


def _publish(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.replace(tmp, path)
    elif _exchange(tmp, path):  # path is now the new directory; tmp holds the old one
        shutil.rmtree(tmp)
    else:
        parked = _parked(path)
        shutil.rmtree(parked, ignore_errors=True)  # left by a writer killed after its move-in
        os.replace(path, parked)
        os.replace(tmp, path)  # a kill between these two: recover() moves `parked` back
        shutil.rmtree(parked)
    _fsync_dir(path.parent)


def _parked(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _sweep(path: Path) -> None:
    """Remove temporary directories that killed writers of `path` left behind."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp")
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and not _alive(int(match[1])):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a power cut after it will not undo it)."""
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _load_renameat2():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2


_RENAMEAT2 = _load_renameat2() if sys.platform.startswith("linux") else None
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step; False where the system or filesystem cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))
