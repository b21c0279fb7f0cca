"""The model repository's lock: one process writes a repository at a time.

A server holds an exclusive ``flock`` on ``<dir>/.lock`` while it runs, with
its pid written in, so a second one is refused with a message that says who
holds it. Where ``fcntl`` does not exist (Windows) the repository is not locked.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: the repository is not locked
    fcntl = None  # type: ignore[assignment]

from turnout.core.errors import RepositoryInUseError, StoreError
from turnout.core.state.repository_files import NOFOLLOW

__all__ = ["LOCK_FILE", "check_unlocked", "flock_repository", "locking"]

# Hidden, so never read as a model; it stays when the server stops (removing a
# lock file another process may be opening would let two servers in).
LOCK_FILE = ".lock"

# False where the platform cannot lock files.
locking = fcntl is not None


def check_unlocked(directory: str | os.PathLike[str]) -> None:
    """Raise StoreError if a running server holds the repository; create and lock nothing.

    A quick check before slow work (converting a model) that would need the
    lock; only taking the lock, as :meth:`ModelStore.lock` does, is sure.
    """
    if fcntl is None:
        return
    root = Path(directory).resolve()
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDONLY | NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return  # no lock file, so no server; anything else, taking the lock reports
    try:
        flock_repository(root, fd)
    finally:
        os.close(fd)  # releases the lock, if it was free and so taken


def flock_repository(root: Path, fd: int) -> None:
    """Lock the open lock file of the repository at ``root``; RepositoryInUseError says who
    holds it."""
    assert fcntl is not None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StoreError(f"cannot lock the model repository {root}: {exc}") from exc
        raise RepositoryInUseError(
            f"the model repository {root} is in use by a running server{_lock_holder(fd)};"
            " only one server opens a repository at a time. Change its models through that"
            " server instead: turnout deploy --server URL (its admin API), not --repository"
        ) from None


def _lock_holder(fd: int) -> str:
    """' (pid N)' from a lock file its holder wrote its pid into, else ''."""
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
