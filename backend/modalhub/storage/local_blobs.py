"""The embedded blob store: files under a local directory, written create-only."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from pathlib import Path, PurePosixPath

from modalhub.storage.protocols import BlobRef, StoreUnavailableError

INLINE_WRITE_LIMIT = 256 * 1024


def _checked_key(key: str) -> PurePosixPath:
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"invalid blob key {key!r}")
    return path


class LocalBlobStore:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        # fsync before a blob becomes visible survives power loss; without it a blob
        # still survives a crash of the hub (the page cache outlives the process).
        self.fsync = fsync

    async def open(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        self.root = self.root.resolve()  # once, so URIs need no realpath per write

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        if not await asyncio.to_thread(os.access, self.root, os.W_OK):
            raise StoreUnavailableError(f"blob directory {self.root} is not writable")

    async def put_if_absent(self, key: str, data: bytes, *, content_type: str) -> BlobRef:
        target = self.root / _checked_key(key)
        if self.fsync or len(data) > INLINE_WRITE_LIMIT:
            created = await asyncio.to_thread(_write_once, target, data, self.fsync)
        else:
            # A small write with no fsync takes less time than a hop to a thread.
            created = _write_once(target, data, False)
        return BlobRef(key=key, uri=target.as_uri(), created=created)

    async def get(self, key: str) -> bytes | None:
        target = self.root / _checked_key(key)
        try:
            return await asyncio.to_thread(target.read_bytes)
        except FileNotFoundError:
            return None


_temp_names = itertools.count()


def _write_once(target: Path, data: bytes, fsync: bool) -> bool:
    """Create ``target`` with ``data`` unless it exists; True if this call created it.

    The data goes to a temporary file first, which is then linked into place: link()
    fails if the name exists, so a re-run never clobbers a result, and a crash never
    leaves half a file under the final name."""
    parent = str(target.parent)
    tmp = f"{parent}/.tmp-{os.getpid()}-{threading.get_ident()}-{next(_temp_names)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        os.makedirs(parent, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        if fsync:  # the new directory entry must reach the disk too
            dir_fd = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return True
    finally:
        os.unlink(tmp)
