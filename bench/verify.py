"""Verification speed: modalhub_sdk Verifier vs the PyPI standardwebhooks library.

Run: .venv/bin/python bench/verify.py   (a report: always exits 0)

Both verify the same N signed ~1 KiB JSON bodies (one whsec_ secret) against the real clock, in
interleaved rounds so machine noise hits both alike; the figure per implementation is the median
over rounds of the mean time per call. Target: ours <= 0.5 x standardwebhooks with
json_parse=False (same work: headers, timestamp, HMAC). The library's default, which also
json-parses the body, is printed for reference.
"""

import base64
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from standardwebhooks.webhooks import Webhook

try:
    from modalhub_sdk.signing import Verifier, sign_modal, sign_standard
except ModuleNotFoundError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))
    from modalhub_sdk.signing import Verifier, sign_modal, sign_standard

N = 2_000
ROUNDS = 9
TARGET = 0.5

Inputs = list[tuple[bytes, dict[str, str]]]


def make_body(rng: random.Random, i: int) -> bytes:
    blob = base64.b64encode(rng.randbytes(540)).decode()
    event = {
        "type": "function.success",
        "call_id": f"fc-01J{i:023d}",
        "status": "success",
        "result": {"affinity": round(rng.random(), 4), "structure_file_base64": blob},
        "error": None,
        "progress": None,
        "execution_time": round(rng.uniform(1, 900), 1),
        "metadata": {
            "job_id": f"job-{i:06d}",
            "batch_id": "batch-xyz789",
            "app": "boltz2",
            "function": "predict",
            "timestamp": "2026-01-15T10:30:00Z",
        },
    }
    return json.dumps(event).encode()


def time_calls(fn: Callable[[bytes, dict[str, str]], object], inputs: Inputs) -> float:
    """Mean microseconds per call over all inputs."""
    start = time.perf_counter_ns()
    for body, headers in inputs:
        fn(body, headers)
    return (time.perf_counter_ns() - start) / len(inputs) / 1000


def main() -> None:
    rng = random.Random(7)
    secret = "whsec_" + base64.b64encode(rng.randbytes(32)).decode()
    now = int(time.time())
    bodies = [make_body(rng, i) for i in range(N)]
    standard: Inputs = [
        (body, sign_standard(body, secret, event_id=f"msg_{i:08d}", timestamp=now))
        for i, body in enumerate(bodies)
    ]
    modal: Inputs = [(body, sign_modal(body, secret, timestamp=now)) for body in bodies]

    ours = Verifier(secret)
    theirs = Webhook(secret)
    # `now` is left to each verifier: both read the real clock, as in production.
    candidates: dict[str, tuple[Callable[[bytes, dict[str, str]], object], Inputs]] = {
        "ours (standard)": (lambda b, h: ours.verify(b, h), standard),
        "standardwebhooks, json_parse=False": (
            lambda b, h: theirs.verify(b, h, json_parse=False),
            standard,
        ),
        "standardwebhooks, default (parses JSON)": (lambda b, h: theirs.verify(b, h), standard),
        "ours (modal scheme, X-Modal-*)": (lambda b, h: ours.verify(b, h), modal),
    }
    for fn, inputs in candidates.values():  # correctness first; also warms caches
        for body, headers in inputs:
            fn(body, headers)

    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    gc.disable()
    try:
        for r in range(ROUNDS):
            # Rotate the order each round so no implementation always runs first.
            for name in names[r % len(names) :] + names[: r % len(names)]:
                fn, inputs = candidates[name]
                samples[name].append(time_calls(fn, inputs))
    finally:
        gc.enable()

    median = {name: statistics.median(values) for name, values in samples.items()}
    mine = median["ours (standard)"]
    strict = mine / median["standardwebhooks, json_parse=False"]
    loose = mine / median["standardwebhooks, default (parses JSON)"]

    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{os.cpu_count()} CPUs, {platform.machine()}; N={N} inputs x {ROUNDS} rounds, "
        f"body ~{statistics.mean(len(b) for b in bodies):.0f} B"
    )
    print(f"{'implementation':42s} {'median us/call':>14s} {'min':>8s} {'max':>8s}")
    for name, values in samples.items():
        print(f"{name:42s} {median[name]:14.2f} {min(values):8.2f} {max(values):8.2f}")
    print(f"ratio ours/standardwebhooks (json_parse=False): {strict:.2f}")
    print(f"ratio ours/standardwebhooks (default):          {loose:.2f}")
    verdict = "PASS" if strict <= TARGET else "FAIL"
    print(f"{verdict}: ours/standardwebhooks = {strict:.2f} (target <= {TARGET})")


if __name__ == "__main__":
    main()
