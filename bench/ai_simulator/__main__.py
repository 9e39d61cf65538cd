"""``python -m bench.ai_simulator --port 9200``: the AI simulator as a process (Ctrl-C stops it)."""

from __future__ import annotations

import argparse
import threading

from bench.ai_simulator.simulator import AISimulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ai_simulator", description="Anthropic/OpenAI/Voyage simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--reply", help="the answer to every chat request (default: echo)")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds before each streamed delta")
    args = parser.parse_args(argv)
    sim = AISimulator(host=args.host, port=args.port)
    if args.reply:
        sim.set_default_reply(args.reply)
    sim.set_token_delay(args.token_delay)
    with sim:
        print(f"anthropic {sim.anthropic_base_url}  openai {sim.openai_base_url}  voyage {sim.voyage_base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
