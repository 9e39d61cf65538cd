"""Every bad input to the CLI is one readable line and a non-zero exit, and changes nothing."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from engine.db.migrations import SCHEMA_DIR
from engine.embedded.ports import free_port
from tests.e2e.cli import assert_one_line_error, clean_env, parlo

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("var", "value"),
    [("PARLO_HTTP_PORT", "abc"), ("PARLO_PG_PORT", "-1"), ("PARLO_CONVERSATION_SHARDS", "0"),
     ("PARLO_DATABASE_URL", "mysql://root:hunter2@db/x"), ("PARLO_LOG_LEVEL", "chatty")],
)
def test_broken_settings(tmp_path: Path, var: str, value: str) -> None:
    result = parlo("status", env=clean_env(PARLO_HOME=str(tmp_path), **{var: value}))
    assert_one_line_error(result, var)
    assert "hunter2" not in result.err


def test_unreachable_database_names_it_with_the_password_masked(tmp_path: Path) -> None:
    url = f"postgresql://parlo:hunter2@127.0.0.1:{free_port()}/parlo"
    result = parlo("tenant", "list", env=clean_env(PARLO_HOME=str(tmp_path), PARLO_DATABASE_URL=url))
    assert_one_line_error(result, "cannot reach PostgreSQL", "127.0.0.1")
    assert "hunter2" not in result.err


def test_commands_before_up_say_what_to_do(tmp_path: Path) -> None:
    result = parlo("tenant", "list", env=clean_env(PARLO_HOME=str(tmp_path / "never-started")))
    assert_one_line_error(result, "parlo up")


@pytest.mark.parametrize("taken", ["PARLO_PG_PORT", "PARLO_REDIS_PORT", "PARLO_RAY_PORT", "PARLO_HTTP_PORT"])
def test_port_in_use_starts_nothing(tmp_path: Path, taken: str) -> None:
    home = tmp_path / "home"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        ports = {var: str(free_port()) for var in ("PARLO_PG_PORT", "PARLO_REDIS_PORT", "PARLO_RAY_PORT", "PARLO_HTTP_PORT")}
        ports[taken] = str(port)
        result = parlo("up", env=clean_env(PARLO_HOME=str(home), **ports))
    assert_one_line_error(result, f"port {port}", taken)
    assert not (home / "postgres" / "postmaster.pid").exists()
    assert not (home / "redis" / "redis.pid").exists()


@pytest.mark.parametrize("args", [("tenant", "create", ""), ("tenant", "create", "x" * 300),
                                  ("tenant", "create", "ok", "--slug", "Bad Slug!"),
                                  ("tenant", "create", "bad\x01name")])
def test_invalid_tenant_names(args: tuple[str, ...], database_url: str, tmp_path: Path) -> None:
    result = parlo(*args, env=clean_env(PARLO_HOME=str(tmp_path), PARLO_DATABASE_URL=database_url))
    assert_one_line_error(result, "tenant")
    listed = parlo("tenant", "list", "--json", env=clean_env(PARLO_HOME=str(tmp_path), PARLO_DATABASE_URL=database_url))
    assert listed.code == 0 and listed.out.strip() == "[]"


def test_unknown_arguments_are_usage_errors(tmp_path: Path) -> None:
    result = parlo("tenant", "frobnicate", env=clean_env(PARLO_HOME=str(tmp_path)))
    assert result.code == 2 and "No such command" in result.err and "Traceback" not in result.err


def test_tampered_and_missing_migrations(empty_database_url: str, tmp_path: Path) -> None:
    schema = tmp_path / "schema"
    shutil.copytree(SCHEMA_DIR, schema)
    env = clean_env(PARLO_HOME=str(tmp_path), PARLO_DATABASE_URL=empty_database_url)
    first = parlo("db", "migrate", "--schema-dir", str(schema), env=env)
    assert first.code == 0, first.err
    assert "0001_core.sql" in first.err

    core = schema / "0001_core.sql"
    original = core.read_text()
    core.write_text(original.replace("CREATE TABLE tenants", "CREATE TABLE tenantz"))
    nxt = len(list(schema.glob("*.sql"))) + 1
    (schema / f"{nxt:04d}_more.sql").write_text("CREATE TABLE more (id int);")
    tampered = parlo("db", "migrate", "--schema-dir", str(schema), env=env)
    assert_one_line_error(tampered, "0001_core.sql was changed after it was applied")

    core.write_text(original)
    (schema / f"{nxt:04d}_more.sql").unlink()
    (schema / f"{nxt + 1:04d}_gap.sql").write_text("CREATE TABLE gap (id int);")
    gap = parlo("db", "migrate", "--schema-dir", str(schema), env=env)
    assert_one_line_error(gap, f"migration {nxt:04d} is missing")

    (schema / f"{nxt + 1:04d}_gap.sql").unlink()
    status = parlo("db", "status", "--json", "--schema-dir", str(schema), env=env)
    assert status.code == 0 and f'"version": {nxt - 1}' in status.out and f'"version": {nxt}' not in status.out


def test_channel_commands_never_print_secrets(database_url: str, tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    env = clean_env(PARLO_HOME=str(tmp_path), PARLO_DATABASE_URL=database_url,
                    PARLO_SECRET_KEY=Fernet.generate_key().decode())
    assert parlo("tenant", "create", "acme", env=env).code == 0
    secrets = ["--app-secret", "appsecret-XYZ", "--verify-token", "verify-XYZ", "--access-token", "token-XYZ"]
    added = parlo("channel", "add", "--tenant", "acme", "--phone-number-id", "1065", "--waba-id", "2001", *secrets,
                  env=env)
    assert added.code == 0, added.err
    again = parlo("channel", "add", "--tenant", "acme", "--phone-number-id", "1065", "--waba-id", "2001", *secrets,
                  env=env)
    assert_one_line_error(again, "already registered")
    missing = parlo("channel", "add", "--tenant", "nobody", "--phone-number-id", "1066", "--waba-id", "2001", *secrets,
                    env=env)
    assert_one_line_error(missing, "no tenant 'nobody'")
    bad = parlo("channel", "add", "--tenant", "acme", "--phone-number-id", "+39 333", "--waba-id", "2001", *secrets,
                env=env)
    assert_one_line_error(bad, "digits only")
    listed = parlo("channel", "list", "--json", env=env)
    assert '"phone_number_id": "1065"' in listed.out
    removed = parlo("channel", "remove", "1065", env=env)
    assert removed.code == 0
    assert_one_line_error(parlo("channel", "remove", "1065", env=env), "no active channel")
    everything = "".join(r.out + r.err for r in (added, again, missing, bad, listed, removed))
    everything += (tmp_path / "logs" / "parlo.jsonl").read_text()
    assert "XYZ" not in everything
