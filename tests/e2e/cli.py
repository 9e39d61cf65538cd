"""Running the real `parlo` command in a subprocess, with a controlled environment."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PARLO = str(Path(sys.executable).parent / "parlo")


@dataclass
class Result:
    code: int
    out: str
    err: str


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLO_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1"})
    env.update(overrides)
    return env


def parlo(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 240) -> Result:
    done = subprocess.run([PARLO, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.code != 0, result
    assert "Traceback" not in result.err + result.out
    lines = [ln for ln in result.err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("parlo: error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
