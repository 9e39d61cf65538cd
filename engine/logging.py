"""Structured logging: one JSON object per line, with request context and no secrets.

Context (``tenant``, ``conversation``, ``wamid``, ``run_id``) is carried in contextvars so that
every line logged while handling one webhook or one AI run names it without being passed around.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import logging.handlers
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from engine.secrets import redact

CONTEXT_KEYS = ("tenant", "conversation", "wamid", "run_id")
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("parlo_log_context", default={})

_STD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


@contextlib.contextmanager
def log_context(**values: object) -> Iterator[None]:
    """Attach ``tenant=…``, ``conversation=…``, ``wamid=…``, ``run_id=…`` to every line logged inside."""
    unknown = set(values) - set(CONTEXT_KEYS)
    if unknown:
        raise ValueError(f"unknown log context keys: {sorted(unknown)}")
    merged = {**_context.get(), **{k: str(v) for k, v in values.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_context.get())
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(redact(entry), default=str).decode()


def configure_logging(level: str = "INFO", *, json: bool = True, file: Path | None = None, stream: Any = None) -> None:
    """Install the JSON formatter on the root logger (idempotent: handlers we added earlier are replaced)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_parlo", False):
            root.removeHandler(handler)
    formatter: logging.Formatter = JsonFormatter() if json else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._parlo = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
