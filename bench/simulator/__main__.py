"""``python -m bench.simulator --port 9100``: the simulator as a process, controlled through ``/_sim/…``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from bench.simulator.simulator import DEFAULT_API_VERSION, Simulator


def _phone(value: str) -> tuple[str, str, str]:
    parts = value.split(":")
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError("expected PHONE_NUMBER_ID:TOKEN:WABA_ID")
    return parts[0], parts[1], parts[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simulator", description="WhatsApp Cloud API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--api-version", default=DEFAULT_API_VERSION)
    parser.add_argument("--phone", type=_phone, action="append", default=[], metavar="ID:TOKEN:WABA", help="register a phone number (repeatable)")
    parser.add_argument("--webhook", help="URL to post webhooks to")
    parser.add_argument("--app-secret", help="app secret that signs the webhooks")
    parser.add_argument("--auto-statuses", action="store_true", help="post sent/delivered/read for every accepted send")
    parser.add_argument("--strict-templates", action="store_true", help="refuse templates not registered (132001)")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    if args.webhook and not args.app_secret:
        parser.error("--webhook needs --app-secret")

    sim = Simulator(host=args.host, port=args.port, api_version=args.api_version, strict_templates=args.strict_templates, seed=args.seed)
    for phone_number_id, token, waba_id in args.phone:
        sim.register_phone(phone_number_id, token, waba_id)
    if args.webhook:
        sim.set_webhook(args.webhook, args.app_secret)
        sim.auto_statuses(args.auto_statuses)

    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        sim.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"WhatsApp Cloud API simulator on {sim.graph_url} (admin: {sim.base_url}/_sim/stats)", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
