"""Drive an ingest endpoint with signed events over keep-alive HTTP/1.1 connections.

Run as its own process by bench/ingest.py so the load does not share an interpreter with
the server. Events are signed up front (fresh timestamps, unique ids) so the timed loop
only sends and reads. Prints one JSON line: throughput, latency percentiles, statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter

from modalhub_sdk.signing import parse_secrets, sign_standard

PATH = "/api/v3/webhooks/modal/completion"


def build_requests(count: int, secret: str, host: str, tag: str) -> list[bytes]:
    keys = parse_secrets(secret)
    requests = []
    for index in range(count):
        call = f"fc-{tag}-{index // 4:06d}"
        kind = ("function.started", "function.progress", "function.progress", "function.success")[
            index % 4
        ]
        event: dict[str, object] = {
            "type": kind,
            "call_id": call,
            "metadata": {"job_id": f"job-{call}", "app": "bench", "function": "predict"},
        }
        if kind == "function.progress":
            event["progress"] = {"percent": 25 * (index % 4), "message": "folding"}
        if kind == "function.success":
            event["result"] = {"affinity": 0.63, "confidence": 0.51, "ptm": 0.54, "plddt": 0.41}
            event["execution_time"] = 205.3
        body = json.dumps(event).encode()
        headers = sign_standard(body, keys, event_id=f"evt-{tag}-{index}")
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + "\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def connection(
    host: str,
    port: int,
    requests: list[bytes],
    next_index: list[int],
    end: int,
    latencies: list[float],
    statuses: Counter[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while next_index[0] < end:
            request = requests[next_index[0]]
            next_index[0] += 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    total = args.warmup + args.requests
    requests = build_requests(total, args.secret, f"{args.host}:{args.port}", args.tag)
    statuses: Counter[int] = Counter()
    # Warm-up: connections, caches, the first SQLite pages.
    index = [0]
    warm: list[float] = []
    await asyncio.gather(
        *(
            connection(args.host, args.port, requests, index, args.warmup, warm, statuses)
            for _ in range(args.concurrency)
        )
    )
    latencies: list[float] = []
    statuses.clear()
    started = time.perf_counter()
    await asyncio.gather(
        *(
            connection(args.host, args.port, requests, index, total, latencies, statuses)
            for _ in range(args.concurrency)
        )
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(quantiles[49] * 1000, 2),
        "p99_ms": round(quantiles[98] * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tag", default="run")
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
