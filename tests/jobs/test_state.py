"""The state machine alone: terminal states are final, progress moves forward only."""

from __future__ import annotations

import itertools
from typing import Any

from modalhub.ingest.schemas import CallbackEvent
from modalhub.jobs.state import StoredResult, apply_event
from modalhub.storage.models import Job, JobStatus


def ev(type_: str, **fields: Any) -> CallbackEvent:
    return CallbackEvent.model_validate({"type": type_, "call_id": "fc-1", **fields})


def run(events: list[tuple[CallbackEvent, int]]) -> tuple[Job, list[str]]:
    job: Job | None = None
    outcomes = []
    for event, signed_at in events:
        decision = apply_event(job, event, signed_at=signed_at, now=1000.0)
        assert decision.job is not None
        job = decision.job
        outcomes.append(decision.outcome)
    assert job is not None
    return job, outcomes


def test_unknown_call_creates_job_with_named_or_derived_id() -> None:
    named, _ = run([(ev("function.started", metadata={"job_id": "job-7", "app": "a"}), 1)])
    derived, _ = run([(ev("function.started"), 1)])
    assert (named.job_id, named.app, named.status) == ("job-7", "a", JobStatus.RUNNING)
    assert derived.job_id == "job-fc-1"


def test_terminal_state_is_final() -> None:
    job, outcomes = run(
        [
            (ev("function.failure", error={"type": "ValueError", "message": "boom"}), 5),
            (ev("function.success", result={"x": 1}), 6),
            (ev("function.progress", progress={"percent": 99}), 7),
        ]
    )
    assert job.status is JobStatus.FAILED
    assert job.error == {"type": "ValueError", "message": "boom"}
    assert job.result is None
    assert outcomes[1:] == ["ignored: job already failed"] * 2
    assert job.events_seen == 3


def test_progress_only_moves_forward() -> None:
    job, outcomes = run(
        [
            (ev("function.progress", progress={"percent": 50, "message": "half"}), 20),
            (ev("function.progress", progress={"percent": 30, "message": "late"}), 10),
            (ev("function.started"), 5),
        ]
    )
    assert (job.progress_percent, job.progress_message) == (50, "half")
    assert outcomes == ["applied", "ignored: older progress", "ignored: already running"]
    assert job.started_at == 5  # the late started event still tells when it started


def test_every_order_of_a_lifecycle_ends_the_same() -> None:
    lifecycle = [
        (ev("function.started"), 1),
        (ev("function.progress", progress={"percent": 40}), 2),
        (ev("function.progress", progress={"percent": 80}), 3),
        (ev("function.success", result={"x": 1}, execution_time=2.5), 4),
    ]
    finals = set()
    for order in itertools.permutations(lifecycle):
        job, _ = run(list(order))
        finals.add((job.status, job.progress_percent, job.execution_time, job.events_seen))
    assert finals == {(JobStatus.SUCCEEDED, 100.0, 2.5, 4)}


def test_success_records_stored_result() -> None:
    stored = StoredResult(summary={"x": 1}, uris={"result.json": "file:///r.json"})
    decision = apply_event(None, ev("function.success"), signed_at=3, now=4.0, result=stored)
    assert decision.job is not None
    assert decision.job.result == {"x": 1}
    assert decision.job.result_uris == {"result.json": "file:///r.json"}
    assert decision.job.completed_by == "webhook"


def test_apply_does_not_mutate_its_input() -> None:
    first = apply_event(None, ev("function.started"), signed_at=1, now=1.0).job
    assert first is not None
    apply_event(first, ev("function.success"), signed_at=2, now=2.0)
    assert first.status is JobStatus.RUNNING and first.events_seen == 1
