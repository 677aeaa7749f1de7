"""Atomic file writes: write to a temporary file beside the target, then rename it into place, so a
reader (or a run killed mid-write) never sees a partial file.

The temporary file is named ``.STEM.XXXXXXXX.tmp.EXT`` (a dotfile, so folder listings skip it) and is
held under an exclusive ``flock`` while it exists. A process that dies (even by SIGKILL) releases its
locks, so a temporary file of ours that can be locked is a leftover of a dead run:
``remove_stale_temporaries`` deletes those and leaves the ones another live process is writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "is_temporary_name", "remove_stale_temporaries"]

# ".STEM." + mkstemp's 8 characters (lower-case letters, digits, "_") + ".tmp" + the target's extension
_TEMPORARY = re.compile(r"\..*\.[a-z0-9_]{8}\.tmp(\.[^.]*)?")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` (a file name, no folder) is one of ``atomic_path``'s temporary names."""
    return _TEMPORARY.fullmatch(name) is not None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path in ``path``'s directory; when the block succeeds, rename it to ``path``
    (with the permissions a new file gets under the umask), else delete it. The temporary file is
    locked (``flock``) until then (module doc)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    stem, suffix = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=directory)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; a saved file should look like any other
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)  # releases the lock, after the rename or the unlink


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of ``atomic_path`` in ``folder`` that no live process holds (left by a
    killed run); returns the deleted paths."""
    removed = []
    for entry in os.scandir(folder):
        if not (is_temporary_name(entry.name) and entry.is_file(follow_symlinks=False)):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:  # locked: a live process is writing it (or it vanished meanwhile)
            pass
        finally:
            os.close(fd)
    return removed
