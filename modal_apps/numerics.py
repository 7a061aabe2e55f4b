"""Numeric batch work on Modal: count primes with a segmented sieve, and find the longest
Collatz chain below a limit. Both report progress to the hub segment by segment.

    modal deploy modal_apps/numerics.py      # needs the `modalhub` Modal secret

Locally, `make dev` loads this file into the hub's local executor (no Modal account).
"""

from __future__ import annotations

import math

import modal

from modalhub_sdk import report_progress, report_to_hub

app = modal.App("numerics")
image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install("httpx")
    .add_local_python_source("modalhub_sdk")
)
hub = modal.Secret.from_name("modalhub")


@app.function(image=image, secrets=[hub], timeout=900)
@report_to_hub(timeout=900)
def count_primes(limit: int, segment: int = 100_000) -> dict[str, int]:
    """Primes below ``limit`` (segmented sieve of Eratosthenes)."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    root = math.isqrt(limit) + 1
    small = bytearray([1]) * root
    small[0:2] = b"\x00\x00"
    for n in range(2, math.isqrt(root) + 1):
        if small[n]:
            small[n * n :: n] = bytearray(len(range(n * n, root, n)))
    base = [n for n in range(root) if small[n]]
    count, largest = 0, 0
    for low in range(0, limit, segment):
        high = min(low + segment, limit)
        sieve = bytearray([1]) * (high - low)
        for p in base:
            start = max(p * p, (low + p - 1) // p * p)
            sieve[start - low :: p] = bytearray(len(range(start, high, p)))
        for offset in range(high - low - 1, -1, -1):
            if sieve[offset] and low + offset >= 2:
                largest = max(largest, low + offset)
                break
        count += sum(sieve[max(0, 2 - low) :])
        report_progress(100 * high / limit, f"sieved up to {high}")
    return {"limit": limit, "primes": count, "largest": largest}


@app.function(image=image, secrets=[hub], timeout=20)
@report_to_hub(timeout=20, soft_deadline_margin=5)
def longest_collatz(limit: int) -> dict[str, int]:
    """The start below ``limit`` with the longest Collatz chain. A large limit runs past
    this function's 20 s timeout: the example of a job that times out."""
    best, best_length = 1, 1
    lengths = {1: 1}
    for start in range(2, limit):
        n, steps = start, 0
        while n not in lengths:
            n = n // 2 if n % 2 == 0 else 3 * n + 1
            steps += 1
        length = steps + lengths[n]
        lengths[start] = length
        if length > best_length:
            best, best_length = start, length
        if start % max(1, limit // 20) == 0:
            report_progress(100 * start / limit, f"checked {start}")
    return {"limit": limit, "start": best, "length": best_length}
