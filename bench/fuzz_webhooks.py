"""The webhook fuzz at full size: ≥ 10,000 mutated, correctly signed deliveries through the
WebhookReceiver against a real PostgreSQL (the suite runs the same test with 300).

Each example must be answered 200 or 400, never raise, and leave either exactly the
well-formed messages of the signing app stored or nothing at all (see
tests/integration/test_webhook_receiver.py, "fuzz").

    .venv/bin/python bench/fuzz_webhooks.py              # 10,000 examples
    .venv/bin/python bench/fuzz_webhooks.py --examples 50000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script, the repo root is not on sys.path
    sys.path.insert(0, str(REPO))

from bench.report import write_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    args = parser.parse_args(argv)
    env = {**os.environ, "PARLO_FUZZ_EXAMPLES": str(args.examples)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=7200",
         "tests/integration/test_webhook_receiver.py", "-k", "fuzz"],
        cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-500:]
    report = {"examples": args.examples, "seconds": round(seconds, 1), "passed": result.returncode == 0,
              "pytest": tail}
    write_report("fuzz_webhooks", report)
    print(f"{args.examples} fuzzed deliveries in {seconds:.0f} s: {'passed' if result.returncode == 0 else 'FAILED'}"
          f" ({tail})")
    if result.returncode != 0:
        print(result.stdout[-4000:])
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
