"""The narrow, async interfaces every backend implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from modalhub.storage.models import InboxEntry, Job


def derived_job_id(call_id: str) -> str:
    """The id of a job first seen through a callback that named no usable job id."""
    return f"job-{call_id}"


class StoreUnavailableError(Exception):
    """The backend could not be reached or could not commit; the caller may retry."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What applying one inbox entry does: the job to write (or None) and a short outcome."""

    job: Job | None
    outcome: str


# Called inside the store's transaction with the job the event belongs to (None if the
# hub has never seen the call) and the entry. Pure: it may run more than once on retry.
DecideFn = Callable[[Job | None, InboxEntry], Decision]


@dataclass(frozen=True, slots=True)
class InboxBacklog:
    pending: int
    oldest_received_at: float | None  # unix seconds; None when nothing is pending


@dataclass(frozen=True, slots=True)
class AppliedEntry:
    entry: InboxEntry
    job: Job | None
    outcome: str


class JobStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the store can serve reads and writes."""

    async def put_inbox(self, entry: InboxEntry) -> bool:
        """Durably store the entry unless its event id exists. True if it was created."""

    async def pending_inbox(self, *, limit: int) -> list[InboxEntry]:
        """Unprocessed entries, oldest first."""

    async def inbox_backlog(self) -> InboxBacklog: ...

    async def apply_inbox(
        self, entries: Sequence[InboxEntry], decide: DecideFn
    ) -> list[AppliedEntry]:
        """For each still-unprocessed entry, atomically: load the job of its call, decide,
        write the job, mark the entry processed with the outcome. Entries already processed
        are skipped (not returned), so concurrent or repeated runs apply an entry once.
        A new job whose id is already taken by another call gets ``derived_job_id``."""

    async def get_job(self, job_id: str) -> Job | None: ...

    async def get_job_by_call(self, call_id: str) -> Job | None: ...


@dataclass(frozen=True, slots=True)
class BlobRef:
    key: str
    uri: str
    created: bool  # False when the blob already existed (a re-run): never overwritten


class BlobStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def put_if_absent(self, key: str, data: bytes, *, content_type: str) -> BlobRef: ...

    async def get(self, key: str) -> bytes | None: ...
