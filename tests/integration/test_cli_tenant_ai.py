"""`parlo tenant ai`: a tenant's assistant settings from the terminal, audited."""

from __future__ import annotations

from pathlib import Path

import asyncio

import pytest

from engine import tenants
from engine.db.pool import connect
from tests.e2e.cli import assert_one_line_error, clean_env, parlo

pytestmark = pytest.mark.integration


def _query(url: str, sql: str, *args: object) -> object:
    async def run() -> object:
        conn = await connect(url)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def _ottica_blu(database_url: str, tmp_path: Path) -> tuple[tenants.Tenant, dict[str, str]]:
    """A fresh tenant "Ottica Blu" and the environment a `parlo` call needs to reach its database."""

    async def create() -> tenants.Tenant:
        conn = await connect(database_url)
        try:
            return await tenants.create(conn, "Ottica Blu")
        finally:
            await conn.close()

    return asyncio.run(create()), clean_env(PARLO_DATABASE_URL=database_url, PARLO_HOME=str(tmp_path))


def test_auto_replies_and_budget_are_set_shown_and_audited(database_url: str, tmp_path: Path) -> None:
    """(A plain test: the CLI runs its own event loop.)"""

    tenant, env = _ottica_blu(database_url, tmp_path)

    shown = parlo(*["tenant", "ai", "ottica-blu"], env=env)
    assert shown.code == 0 and "auto-replies off, monthly budget none" in shown.out

    changed = parlo(*["tenant", "ai", "ottica-blu", "--auto-reply", "--budget", "25",
                                   "--business-facts", "Ottica a Bologna, aperta dal 1990."], env=env)
    assert changed.code == 0 and "auto-replies on, monthly budget 25.0 USD" in changed.out
    settings: dict = _query(database_url, "SELECT settings FROM tenants WHERE id = $1", tenant.id)  # type: ignore[assignment]
    assert settings["ai_auto_reply"] is True and settings["business_facts"].startswith("Ottica a Bologna")
    assert _query(database_url, "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'tenant.ai'",
                  tenant.id) == 1

    removed = parlo(*["tenant", "ai", "ottica-blu", "--no-budget", "--no-auto-reply"], env=env)
    assert removed.code == 0 and "auto-replies off, monthly budget none" in removed.out

    assert_one_line_error(parlo("tenant", "ai", "nessuno", env=env), "no tenant 'nessuno'")
    for bad in (["tenant", "ai", "ottica-blu", "--budget", "-3"],
                ["tenant", "ai", "ottica-blu", "--budget", "5", "--no-budget"]):
        answer = parlo(*bad, env=env)  # click's usage errors: exit 2, a readable line, no traceback
        assert answer.code == 2 and "Error:" in answer.err and "Traceback" not in answer.err, answer.err


def test_web_search_sites_are_checked_stored_shown_audited_and_removed(database_url: str, tmp_path: Path) -> None:
    tenant, env = _ottica_blu(database_url, tmp_path)

    def stored() -> object:
        settings: dict = _query(database_url, "SELECT settings FROM tenants WHERE id = $1", tenant.id)  # type: ignore[assignment]
        return settings.get("ai_web_search_domains")

    def audited() -> object:
        return _query(database_url, "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'tenant.ai'",
                      tenant.id)

    assert "web search off" in parlo("tenant", "ai", "ottica-blu", env=env).out  # off unless the business asks

    on = parlo("tenant", "ai", "ottica-blu", "--web-search-domain", "Ottica-Blu.it",
               "--web-search-domain", "catalogo.fornitore.example.com", env=env)
    assert on.code == 0, on.err
    assert "web search on (ottica-blu.it, catalogo.fornitore.example.com)" in on.out
    assert stored() == ["ottica-blu.it", "catalogo.fornitore.example.com"]
    assert audited() == 1
    details = _query(database_url, "SELECT details FROM audit_log WHERE tenant_id = $1 AND action = 'tenant.ai'", tenant.id)
    assert details == {"ai_web_search_domains": ["ottica-blu.it", "catalogo.fornitore.example.com"]}

    hostile = {
        "https://ottica-blu.it/negozio": "is a URL: give the site's hostname only (ottica-blu.it)",
        "ottica-blu.it/negozio": "has a path",
        "*.ottica-blu.it": "has a wildcard",
        "ottica-blu.it:8443": "no port",
        "10.0.0.1": "is an IP address",
        "": "an empty hostname",
    }
    for domain, reason in hostile.items():
        refused = parlo("tenant", "ai", "ottica-blu", "--auto-reply", "--web-search-domain", "ok.it",
                        "--web-search-domain", domain, env=env)
        assert refused.code == 2 and "Traceback" not in refused.err, refused.err
        assert "Error: --web-search-domain: " in refused.err and reason in refused.err, refused.err
    many = [arg for i in range(1000) for arg in ("--web-search-domain", f"sito{i}.it")]
    refused = parlo("tenant", "ai", "ottica-blu", *many, env=env)
    assert refused.code == 2 and "at most 20 sites, not 1000" in refused.err and "Traceback" not in refused.err
    contradiction = parlo("tenant", "ai", "ottica-blu", "--web-search-domain", "ok.it", "--no-web-search", env=env)
    assert contradiction.code == 2 and "contradict" in contradiction.err
    # nothing of a refused command was stored: not the sites, not the --auto-reply given with them
    assert stored() == ["ottica-blu.it", "catalogo.fornitore.example.com"] and audited() == 1
    assert "auto-replies off" in parlo("tenant", "ai", "ottica-blu", env=env).out

    off = parlo("tenant", "ai", "ottica-blu", "--no-web-search", env=env)
    assert off.code == 0 and "web search off" in off.out
    assert stored() is None and audited() == 2
