"""The embedded blob store: files under a local directory, written create-only."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path, PurePosixPath

from modalhub.storage.protocols import BlobRef, StoreUnavailableError


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
        created = await asyncio.to_thread(self._write_once, target, data, self.fsync)
        return BlobRef(key=key, uri=target.as_uri(), created=created)

    async def get(self, key: str) -> bytes | None:
        target = self.root / _checked_key(key)
        try:
            return await asyncio.to_thread(target.read_bytes)
        except FileNotFoundError:
            return None

    @staticmethod
    def _write_once(target: Path, data: bytes, fsync: bool) -> bool:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write and fsync a temporary file, then link it into place: link() fails if the
        # name exists, so a re-run never clobbers a result and readers never see half a file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                if fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp)
