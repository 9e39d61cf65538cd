"""engine/ must stay importable without Ray, FastAPI, Textual, the TUI or the CLI."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import engine

pytestmark = pytest.mark.unit

FORBIDDEN = ("ray", "fastapi", "textual", "tui", "cli", "starlette")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in result.stdout.split()}


def test_import_engine_loads_none_of_the_outer_layers() -> None:
    assert not (_loaded_after("import engine") & set(FORBIDDEN))


def test_every_engine_module_imports_without_the_outer_layers() -> None:
    modules = [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")]
    assert "engine.db.migrations" in modules
    loaded = _loaded_after("\n".join(f"import {m}" for m in modules))
    assert not (loaded & set(FORBIDDEN)), f"engine pulled in {sorted(loaded & set(FORBIDDEN))}"
