from __future__ import annotations

from pathlib import Path


def log_tail(path: Path, prefer: tuple[str, ...] = ()) -> str:
    """The most telling line of a service's log: the last one containing a preferred marker, else the last one."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log written"
    preferred = [ln for ln in lines if any(marker in ln for marker in prefer)]
    return (preferred or lines or ["no log written"])[-1]
