"""`parlo up` / `parlo down` on a fresh home: healthy, idempotent, and data survives a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from cli.runtime import ray_processes, ray_temp_dir
from engine.config import Settings
from engine.embedded.ports import free_port
from tests.e2e.cli import clean_env, parlo

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def engine_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("lifecycle") / "home"
    env = clean_env(PARLO_HOME=str(home), PARLO_HTTP_PORT=str(free_port()), PARLO_PG_PORT=str(free_port()),
                    PARLO_REDIS_PORT=str(free_port()), PARLO_RAY_PORT=str(free_port()))
    yield env
    parlo("down", env=env)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _settings(env: dict[str, str]) -> Settings:
    """The engine's settings as the `parlo` processes of this test read them."""
    return Settings(home=Path(env["PARLO_HOME"]), ray_port=int(env["PARLO_RAY_PORT"]),  # type: ignore[call-arg]
                    _env_file=None)


def _health(env: dict[str, str]) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{env['PARLO_HTTP_PORT']}/healthz", timeout=10)


def test_up_down_up_keeps_data(engine_env: dict[str, str]) -> None:
    env = engine_env
    home = Path(env["PARLO_HOME"])

    first = parlo("up", env=env)
    assert first.code == 0, first.err
    assert f"Inbox: http://localhost:{env['PARLO_HTTP_PORT']}/" in first.out
    login = json.loads((home / "demo-login.json").read_text())
    assert f"password: {login['password']}" in first.out
    assert oct((home / "demo-login.json").stat().st_mode & 0o777) == "0o600"
    health = _health(env)
    assert health.status_code == 200
    assert {"postgres", "redis", "ray", "shards"} <= set(health.json()["components"])

    again = parlo("up", env=env)
    assert again.code == 0 and "already running" in again.err
    assert login["password"] not in again.out  # the password is printed once

    assert parlo("tenant", "create", "acme", env=env).code == 0
    listed = json.loads(parlo("tenant", "list", "--json", env=env).out)
    assert {t["slug"] for t in listed} == {"demo", "acme"}

    status = parlo("status", "--json", env=env)
    report = json.loads(status.out)
    assert status.code == 0 and report["status"] == "ok"
    assert set(report["components"]) == {"postgres", "redis", "ray", "serve", "shards"}
    assert "****" in report["components"]["postgres"]["url"]
    creds = json.loads((home / "credentials.json").read_text())
    assert creds["postgres_app"] not in status.out and creds["redis"] not in status.out

    pids = [report["components"]["postgres"]["pid"], report["components"]["redis"]["pid"]]
    ray_pids = {proc.pid: " ".join(proc.cmdline()) for proc in ray_processes(_settings(env))}
    assert any("gcs_server" in cmd for cmd in ray_pids.values())
    # what a one-node engine does not use is not left running: the Ray Client server (which `ray
    # start` detaches from the rest, so it once outlived `parlo down`), the autoscaler, the log monitor
    for unused in ("ray.util.client.server", "autoscaler/_private/monitor.py", "_private/log_monitor.py"):
        assert not any(unused in cmd for cmd in ray_pids.values()), unused
    assert not [p.pid for p in psutil.process_iter(["cmdline"])
                if "ray.util.client.server" in (p.info["cmdline"] or [])
                and any(part.endswith(f":{env['PARLO_RAY_PORT']}") for part in p.info["cmdline"] or [])]
    down = parlo("down", env=env)
    assert down.code == 0 and "postgres" in down.err
    assert not any(_alive(pid) for pid in pids)
    assert [cmd for pid, cmd in ray_pids.items() if _alive(pid)] == []
    with pytest.raises(httpx.HTTPError):
        _health(env)

    back = parlo("up", env=env)
    assert back.code == 0, back.err
    assert _health(env).status_code == 200
    listed = json.loads(parlo("tenant", "list", "--json", env=env).out)
    assert {t["slug"] for t in listed} == {"demo", "acme"}
    assert json.loads((home / "demo-login.json").read_text()) == login

    tail = parlo("logs", "postgres", "-n", "3", env=env)
    assert tail.code == 0 and 0 < len(tail.out.splitlines()) <= 3
    engine_log = parlo("logs", "engine", "-n", "1000", env=env)
    assert engine_log.code == 0
    entries = [json.loads(line) for line in engine_log.out.splitlines()]
    assert any(e.get("tenant") == "acme" and e["msg"] == "tenant created" for e in entries)


def test_no_secret_is_written_to_any_log(engine_env: dict[str, str]) -> None:
    home = Path(engine_env["PARLO_HOME"])
    secrets = [*json.loads((home / "credentials.json").read_text()).values(),
               json.loads((home / "demo-login.json").read_text())["password"]]
    settings = _settings(engine_env)
    log_files = [p for root in (home / "logs", ray_temp_dir(settings))
                 for p in root.rglob("*") if p.is_file() and p.suffix in (".log", ".jsonl", ".out", ".err", ".txt")]
    assert len(log_files) > 5
    for path in log_files:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {path}"
