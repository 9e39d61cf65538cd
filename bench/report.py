"""What every benchmark writes: its figures as JSON and Markdown in bench/results/, with the git
revision and the machine they were measured on."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"


def write_report(stem: str, data: Any, markdown: str | None = None) -> list[Path]:
    """Write ``<stem>.json`` (and ``<stem>.md``) atomically; returns the files written."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    files = [(f"{stem}.json", json.dumps(data, indent=2) + "\n")]
    if markdown is not None:
        files.append((f"{stem}.md", markdown))
    written = []
    for name, text in files:
        target = RESULTS_DIR / name
        partial = target.with_name(name + ".tmp")
        partial.write_text(text)
        partial.replace(target)
        written.append(target)
    return written


def git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def machine() -> dict[str, Any]:
    return {
        "cpus_logical": psutil.cpu_count(logical=True),
        "cpus_physical": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
