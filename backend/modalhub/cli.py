"""The ``modalhub`` command: serve, worker, dev and sign."""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from ulid import ULID

from modalhub.config import Settings
from modalhub_sdk.signing import parse_secrets, sign_modal, sign_standard

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
CALLBACK_PATH = "/api/v3/webhooks/modal/completion"


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        ]
        raise CliError("invalid settings:\n" + "\n".join(lines)) from None


def _run_server(host: str, port: int, workers: int, access_log: bool) -> None:
    import uvicorn

    uvicorn.run(
        "modalhub.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,  # the app routes uvicorn's records through structlog
        access_log=access_log,
        timeout_graceful_shutdown=10,
    )


def _serve(settings: Settings, host: str, port: int, workers: int, access_log: bool) -> None:
    if not settings.webhook_base_url:
        # Where functions run by the local executor send their callbacks: this server.
        local_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        os.environ["WEBHOOK_BASE_URL"] = f"http://{local_host}:{port}"
    worker = None
    if settings.processor == "worker":
        worker = subprocess.Popen(
            [sys.executable, "-m", "modalhub", "worker", "--parent-pid", str(os.getpid())]
        )
    try:
        _run_server(host, port, workers, access_log)
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()


def cmd_serve(args: argparse.Namespace) -> None:
    settings = _load_settings()
    if not settings.webhook_secrets:
        raise CliError(
            "no webhook secret: set MODAL_WEBHOOK_SECRET (or MODALHUB_WEBHOOK_SECRET); "
            "`modalhub dev` generates one for local use"
        )
    _serve(settings, args.host, args.port, args.workers, args.access_log)


def cmd_worker(args: argparse.Namespace) -> None:
    from modalhub.jobs import worker

    worker.main(_load_settings(), parent_pid=args.parent_pid)


def _read_or_create(path: Path, make: str) -> str:
    if path.exists():
        return path.read_text().strip()
    path.write_text(make + "\n")
    path.chmod(0o600)
    return make


def cmd_dev(args: argparse.Namespace) -> None:
    data_dir = Path(os.environ.setdefault("MODALHUB_DATA_DIR", ".modalhub"))
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = os.environ.get("MODALHUB_WEBHOOK_SECRET") or os.environ.get("MODAL_WEBHOOK_SECRET")
    if not secret:
        secret = _read_or_create(
            data_dir / "dev-secret", "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        )
        os.environ["MODALHUB_WEBHOOK_SECRET"] = secret
    notify_secret = os.environ.get("MODALHUB_NOTIFY_SECRET") or _read_or_create(
        data_dir / "dev-notify-secret",
        "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
    )
    os.environ.setdefault("MODALHUB_NOTIFY_SECRET", notify_secret)
    token = os.environ.get("MODALHUB_ADMIN_TOKENS", "").replace(",", " ").split()
    admin_token = (
        token[0]
        if token
        else _read_or_create(data_dir / "dev-admin-token", secrets.token_urlsafe(24))
    )
    os.environ.setdefault("MODALHUB_ADMIN_TOKENS", admin_token)
    os.environ.setdefault("MODALHUB_LOG_FORMAT", "console")
    examples = sorted(Path("modal_apps").glob("*.py"))
    if "MODALHUB_LOCAL_APPS" not in os.environ and examples:
        os.environ["MODALHUB_LOCAL_APPS"] = ",".join(str(path) for path in examples)
    settings = _load_settings()

    example = data_dir / "example-event.json"
    example.write_text(json.dumps(_example_event(), indent=2) + "\n")
    url = f"http://{args.host}:{args.port}"
    body = example.read_bytes()
    headers = sign_standard(body, parse_secrets(secret), event_id=f"evt_{ULID()}")
    print(
        f"\nmodalhub dev: {url}  (data in {data_dir}/)\n"
        f"  webhook secret: {secret}\n"
        f"  operator token: {admin_token}\n"
        f"  notify secret:  {notify_secret}  (verifies what the hub sends to notify_url)\n\n"
        "Send a signed test event (the signature is valid for 5 minutes):\n"
        f"  {_curl_line(url + CALLBACK_PATH, headers, example)}\n"
        "Sign a fresh one at any time:\n"
        f"  modalhub sign --secret-file {data_dir}/dev-secret --body-file {example}"
        f" --format curl --url {url}{CALLBACK_PATH}\n"
        "Read the job it created:\n"
        f"  curl -sS -H 'Authorization: Bearer {admin_token}' {url}/api/v3/jobs/job-demo-1\n",
        flush=True,
    )
    if settings.local_apps:
        submission = json.dumps(
            {"app": "numerics", "function": "count_primes", "kwargs": {"limit": 50_000_000}}
        )
        print(
            f"Local apps: {', '.join(str(path) for path in settings.local_apps)}\n"
            "Run a job on them and watch it (progress, then the result):\n"
            f"  curl -sS -X POST -H 'Authorization: Bearer {admin_token}'"
            f" -H 'Content-Type: application/json' -d '{submission}' {url}/api/v3/jobs\n"
            'Add "notify_url": "https://..." to have the finished job POSTed there, signed.\n',
            flush=True,
        )
    _serve(settings, args.host, args.port, 1, access_log=True)


def _example_event() -> dict[str, object]:
    return {
        "type": "function.success",
        "call_id": "fc-demo-1",
        "status": "success",
        "result": {"affinity": 0.63, "confidence": 0.51, "structure_file_base64": "aGVsbG8="},
        "execution_time": 12.5,
        "metadata": {"job_id": "job-demo-1", "app": "boltz2", "function": "predict"},
    }


def _curl_line(url: str, headers: dict[str, str], body_file: Path) -> str:
    parts = ["curl", "-sS", "-X", "POST", url, "-H", "Content-Type: application/json"]
    for name, value in headers.items():
        parts += ["-H", f"{name}: {value}"]
    parts += ["--data-binary", f"@{body_file}"]
    return shlex.join(parts)


def cmd_sign(args: argparse.Namespace) -> None:
    if args.secret:
        raw_secret = args.secret
    elif args.secret_file:
        try:
            raw_secret = Path(args.secret_file).read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read secret file: {exc}") from None
    else:
        raw_secret = os.environ.get("MODALHUB_WEBHOOK_SECRET") or os.environ.get(
            "MODAL_WEBHOOK_SECRET", ""
        )
    try:
        keys = parse_secrets(raw_secret)
    except ValueError as exc:
        raise CliError(f"no usable secret ({exc}); pass --secret or --secret-file") from None
    try:
        body = (
            sys.stdin.buffer.read() if args.body_file == "-" else Path(args.body_file).read_bytes()
        )
    except OSError as exc:
        raise CliError(f"cannot read body: {exc}") from None
    try:
        json.loads(body)
    except ValueError:
        raise CliError("the body is not valid JSON; the hub would refuse it") from None
    event_id = args.id or f"evt_{ULID()}"
    if args.scheme == "standard":
        headers = sign_standard(body, keys, event_id=event_id)
    else:
        headers = sign_modal(body, keys, event_id=args.id)
    if args.format == "json":
        print(json.dumps(headers))
    elif args.format == "curl":
        if args.body_file == "-":
            raise CliError("--format curl needs --body-file PATH (curl must read the same bytes)")
        print(_curl_line(args.url, headers, Path(args.body_file)))
    else:
        for name, value in headers.items():
            print(f"{name}: {value}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modalhub", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the hub (settings from MODALHUB_* variables)")
    serve.add_argument("--host", default=os.environ.get("MODALHUB_HOST", "0.0.0.0"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("MODALHUB_PORT", "8000")))
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="apply stored callbacks to jobs (no HTTP server)")
    worker.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    worker.set_defaults(func=cmd_worker)

    dev = sub.add_parser("dev", help="run the hub on the embedded default with a dev secret")
    dev.add_argument("--host", default=DEFAULT_HOST)
    dev.add_argument("--port", type=int, default=DEFAULT_PORT)
    dev.set_defaults(func=cmd_dev)

    sign = sub.add_parser("sign", help="print signed headers for a JSON body")
    sign.add_argument("--body-file", required=True, help="JSON body to sign, or - for stdin")
    sign.add_argument("--secret", help="signing secret (default: MODAL_WEBHOOK_SECRET)")
    sign.add_argument("--secret-file", help="file holding the signing secret")
    sign.add_argument("--scheme", choices=["standard", "modal"], default="standard")
    sign.add_argument("--id", help="event id (default: a new ULID)")
    sign.add_argument("--format", choices=["headers", "curl", "json"], default="headers")
    sign.add_argument(
        "--url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}{CALLBACK_PATH}", help="for curl"
    )
    sign.set_defaults(func=cmd_sign)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CliError as exc:
        print(f"modalhub: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
