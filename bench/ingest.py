"""Durable ingest against a bare FastAPI endpoint, side by side on the same machine.

    .venv/bin/python bench/ingest.py            # 3 rounds, 32 connections, ~1 minute

Each round starts, in turn, the bare endpoint (bench/bare_app.py) and the hub with
MODALHUB_SQLITE_SYNCHRONOUS=FULL and =NORMAL, each on uvicorn with the same settings
(one worker, loopback), and drives it from a separate load-generator process
(bench/loadgen.py) with pre-signed events. For the hub it also measures how long the
background processing takes to apply every acknowledged event after the load stops,
and checks that all of them were applied. Ratios are taken within a round, then the
median over rounds is reported, because the machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_YmVuY2htYXJrLXNlY3JldC1mb3ItbW9kYWxodWItaW5nZXN0IQ=="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("server did not become ready")


def start(target: str, port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if target == "bare":
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare_app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    else:
        env |= {
            "MODALHUB_DATA_DIR": str(data_dir),
            "MODALHUB_WEBHOOK_SECRET": SECRET,
            "MODALHUB_SQLITE_SYNCHRONOUS": target.removeprefix("hub-").upper(),
            "MODALHUB_LOG_FORMAT": "json",
        }
        cmd = [
            sys.executable,
            "-m",
            "modalhub",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    log = (data_dir / "server.log").open("ab")
    with log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def drain_seconds(url: str, deadline_s: float = 120) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < deadline_s:
        health = httpx.get(url + "/api/v3/webhooks/modal/health", timeout=5).json()
        if health["checks"]["inbox"]["pending"] == 0:
            return time.perf_counter() - started
        time.sleep(0.02)
    raise RuntimeError("processing did not catch up")


def run_target(target: str, args: argparse.Namespace, round_no: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{target}-") as tmp:
        data_dir = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start(target, port, data_dir)
        try:
            wait_ready(url, proc)
            out = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "bench" / "loadgen.py"),
                    "--port",
                    str(port),
                    "--secret",
                    SECRET,
                    "--requests",
                    str(args.requests),
                    "--warmup",
                    str(args.warmup),
                    "--concurrency",
                    str(args.concurrency),
                    "--tag",
                    f"{target}-{round_no}",
                ],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT / "backend")},
            )
            result: dict[str, Any] = json.loads(out.stdout)
            if target != "bare":
                result["drain_s"] = round(drain_seconds(url), 3)
                with sqlite3.connect(data_dir / "modalhub.sqlite3") as conn:
                    unapplied = conn.execute(
                        "SELECT count(*) FROM inbox WHERE processed_at IS NULL"
                    ).fetchone()[0]
                    stored = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
                result["stored"], result["unapplied"] = stored, unapplied
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--targets", default="bare,hub-full,hub-normal")
    args = parser.parse_args()
    targets = args.targets.split(",")

    rounds: list[dict[str, dict[str, Any]]] = []
    for round_no in range(args.rounds):
        results = {target: run_target(target, args, round_no) for target in targets}
        rounds.append(results)
        print(f"round {round_no + 1}: " + json.dumps(results), flush=True)

    def median(target: str, key: str) -> float:
        return statistics.median(r[target][key] for r in rounds)

    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, {args.concurrency} connections, "
        f"{args.requests} requests per run, median of {args.rounds} rounds\n"
    )
    print("| target | req/s | ratio to bare | p50 ms | p99 ms | drain after load s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for target in targets:
        ratio = (
            statistics.median(r[target]["rps"] / r["bare"]["rps"] for r in rounds)
            if "bare" in targets
            else float("nan")
        )
        drain = f"{median(target, 'drain_s'):.2f}" if target != "bare" else "—"
        print(
            f"| {target} | {median(target, 'rps'):.0f} | {ratio:.2f} | "
            f"{median(target, 'p50_ms'):.2f} | {median(target, 'p99_ms'):.2f} | {drain} |"
        )
    for r in rounds:
        for target in targets:
            if target != "bare":
                expected = args.requests + args.warmup
                assert r[target]["stored"] == expected, (target, r[target])
                assert r[target]["unapplied"] == 0, (target, r[target])
    print("\nevery acknowledged event was stored and applied in every hub run")


if __name__ == "__main__":
    main()
