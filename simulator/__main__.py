"""Command line: ``python -m simulator [options]`` serves the Rublon simulator.

Example::

    python -m simulator --port 8765 --system-token T --secret-key K \\
        --user alice:alice@example.com:active --user bob:bob@example.com:bypass \\
        --decision approve --expires-in 120

Prints ``simulator listening on http://HOST:PORT`` (flushed) once it accepts
connections. Exit status 2 for bad arguments or when it refuses to start
(MFA_GATE_ENV=production, non-loopback host).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rublon import promptless_mapping as pm
from simulator.guard import SimulatorRefused, refuse_in_production
from simulator.server import serve
from simulator.state import (
    DEFAULT_ACCEPTED_CODE,
    DEFAULT_EXPIRES_IN,
    DEFAULT_TOKEN_TTL,
    Decision,
    SimulatorState,
    SimUser,
    make_user,
)

#: Exit status for refusals and bad arguments (argparse uses 2 as well).
EXIT_REFUSED = 2


def parse_user(text: str) -> SimUser:
    """Read ``username:email:status[:method,method...]`` (status active, bypass or denied).

    Raises:
        argparse.ArgumentTypeError: a malformed spec.
    """
    parts = text.split(":")
    if len(parts) not in (3, 4) or not all(parts[:3]):
        raise argparse.ArgumentTypeError(f"--user expects username:email:status[:methods], got {text!r}")
    username, email, status = parts[:3]
    methods = tuple(m for m in parts[3].split(",") if m) if len(parts) == 4 else None
    try:
        return make_user(username, email, status, methods)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_app(text: str) -> tuple[str, str]:
    """Read ``SYSTEM_TOKEN:SECRET_KEY`` for an additional application."""
    token, sep, key = text.partition(":")
    if not sep or not token or not key:
        raise argparse.ArgumentTypeError("--app expects SYSTEM_TOKEN:SECRET_KEY")
    return token, key


def parse_decision(text: str) -> Decision:
    try:
        return Decision.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Rublon simulator for development and tests (never production).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback; default %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default %(default)s)")
    parser.add_argument(
        "--system-token",
        default=os.environ.get("RUBLON_SYSTEM_TOKEN"),
        help="System Token of the app (default: $RUBLON_SYSTEM_TOKEN)",
    )
    parser.add_argument(
        "--secret-key",
        default=os.environ.get("RUBLON_SECRET_KEY"),
        help="Secret Key of the app (default: $RUBLON_SECRET_KEY)",
    )
    parser.add_argument(
        "--app", type=parse_app, action="append", default=[], metavar="TOKEN:KEY", help="another app (repeatable)"
    )
    parser.add_argument(
        "--user",
        type=parse_user,
        action="append",
        default=[],
        metavar="NAME:EMAIL:STATUS[:METHODS]",
        help="a user, status active|bypass|denied, methods comma-separated "
        f"(default methods push,totp; known: {','.join(sorted(pm.ALL_METHODS))}) (repeatable)",
    )
    parser.add_argument(
        "--decision",
        type=parse_decision,
        default=Decision("approve"),
        help="approve | deny | expire | manual | approve:SECONDS | deny:SECONDS (default approve)",
    )
    parser.add_argument("--expires-in", type=float, default=DEFAULT_EXPIRES_IN, help="transaction expiry, seconds")
    parser.add_argument("--token-ttl", type=float, default=DEFAULT_TOKEN_TTL, help="access token lifetime, seconds")
    parser.add_argument("--accepted-code", default=DEFAULT_ACCEPTED_CODE, help="the code totp/sms/yubikey accept")
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument(
        "--allow-non-loopback", action="store_true", help="permit a non-loopback --host (development containers)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator; returns the exit status."""
    try:
        refuse_in_production()
    except SimulatorRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.system_token or not args.secret_key:
        parser.error("--system-token and --secret-key are required (or RUBLON_SYSTEM_TOKEN / RUBLON_SECRET_KEY)")
    apps = {args.system_token: args.secret_key, **dict(args.app)}
    try:
        state = SimulatorState(
            apps=apps,
            users=args.user,
            decision=args.decision,
            expires_in=args.expires_in,
            token_ttl=args.token_ttl,
            accepted_code=args.accepted_code,
        )
    except ValueError as exc:
        parser.error(str(exc))

    def announce(url: str) -> None:
        print(f"simulator listening on {url}", flush=True)

    try:
        serve(
            args.host,
            args.port,
            state,
            log_level=args.log_level,
            allow_non_loopback=args.allow_non_loopback,
            on_ready=announce,
        )
    except SimulatorRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
