"""Named SQL blocks loaded from ``engine/db/sql/*.sql``.

A block starts with ``-- name: <name>`` and runs until the next such line::

    -- name: create_tenant
    INSERT INTO tenants (slug, name) VALUES ($1, $2) RETURNING *;
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).parent / "sql"
_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_blocks(text: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        name = match["name"]
        if name in blocks:
            raise ValueError(f"SQL block {name!r} is defined twice")
        blocks[name] = text[match.end():end].strip()
    return blocks


@cache
def queries(module: str) -> dict[str, str]:
    return parse_blocks((SQL_DIR / f"{module}.sql").read_text())


def sql(module: str, name: str) -> str:
    try:
        return queries(module)[name]
    except KeyError:
        raise KeyError(f"no SQL block {name!r} in {module}.sql") from None
