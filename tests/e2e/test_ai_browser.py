"""The inbox's AI surfaces in a real browser (Debian's Chromium, Playwright's async API) against the
real Serve app, with the AI simulator as Anthropic (the official SDK's wire format) and the Cloud
API simulator as Meta: an agent's draft streams its progress and tokens into the AI panel, is
cancelled, asked again, edited and sent; the admin pages for the knowledge base and AI usage.

Each test makes its own tenant and saves screenshots into its output folder (printed; under
pytest's tmp_path).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from bench.ai_simulator import AISimulator
from bench.wp_simulator import WordPressSimulator
from engine.ai.knowledge import store
from engine.ai.knowledge.extract import extract
from engine.ai.service import offline_embedder
from tests.api_harness import Gateway, TenantKit
from tests.e2e.browser import (CHROMIUM, CHROMIUM_ARGS, PHONE, InboxPage, italian_leftovers, open_inbox, strings,
                               visible_strings)
from tests.e2e.test_inbox_browser import eventually, inbound, new_wa_id

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]

IT, EN = strings("it"), strings("en")
FAQ = ("domanda,risposta\nQuanto costa l'esame della vista?,L'esame della vista costa 35 euro e dura 30 minuti.\n"
       "Siete aperti il sabato?,Il sabato siamo aperti dalle 9:30 alle 19:00.\n").encode()
QUESTION = "Buongiorno, quanto costa l'esame della vista?"
ANSWER = "L'esame della vista costa 35 euro [1]."
LONG_ANSWER = " ".join(["L'esame della vista costa 35 euro e dura mezz'ora"] * 40)
AUTO_DEBOUNCE_S = 6.0


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture(scope="module")
def ai_sim() -> Iterator[AISimulator]:
    with AISimulator() as simulator:
        yield simulator


@pytest.fixture(scope="module")
def ai_gateway(ray_cluster: None, postgres: Any, redis_server: Any, tmp_path_factory: pytest.TempPathFactory,
               ai_sim: AISimulator) -> Iterator[Gateway]:
    from tests.conftest import running_gateway

    from engine.config import Settings

    # a debounce before auto-replies long enough for a test to put its conversation in draft mode first
    slow_auto = {"ai_debounce_s": AUTO_DEBOUNCE_S} if "ai_debounce_s" in Settings.model_fields else {}
    with running_gateway(postgres, redis_server, tmp_path_factory.mktemp("ai-browser-gateway"),
                         ai_anthropic_api_key="sk-ant-test", ai_anthropic_base_url=ai_sim.anthropic_base_url,
                         ai_fallback_model="none", **slow_auto) as running:
        yield running


@pytest.fixture(scope="module")
def wp() -> Iterator[WordPressSimulator]:
    with WordPressSimulator() as site:
        yield site


@pytest.fixture(autouse=True)
def fresh_sim(ai_sim: AISimulator) -> Iterator[None]:
    ai_sim.set_default_reply(ANSWER)
    ai_sim.set_token_delay(0.0)
    yield
    ai_sim.set_token_delay(0.0)


@pytest.fixture
def output(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    folder = tmp_path / "output"
    folder.mkdir()
    print(f"\n{request.node.name}: screenshots in {folder}")
    return folder


@pytest.fixture
async def tab(browser: Browser, ai_gateway: Gateway, output: Path) -> AsyncIterator[InboxPage]:
    inbox = await open_inbox(browser, ai_gateway)
    try:
        yield inbox
    finally:
        await inbox.screenshot(output, "last.png")  # how the page looked when the test ended, passed or not
        await inbox.context.close()


async def tenant_with_faq(gateway: Gateway) -> TenantKit:
    """A new tenant whose knowledge base holds a two-question FAQ named "domande"."""
    kit = await gateway.tenant()
    embedder = offline_embedder(gateway.settings)
    async with gateway.connect() as conn:
        await conn.execute("UPDATE tenants SET settings = settings || '{\"ai_auto_reply\": true}' WHERE id = $1",
                           kit.id)
        source = await store.add_source(conn, kit.id, "faq", "domande")
        await store.sync_documents(conn, source, extract("domande.csv", FAQ), embedder)
    return kit


async def customer_asks(kit: TenantKit, name: str, *, assign_to: str | None = None) -> str:
    """The customer's question, in a conversation whose AI writes drafts only (no auto-reply races
    the agent's draft)."""
    wa_id = new_wa_id()
    await inbound(kit, wa_id, QUESTION, name)
    conversation = await kit.conversation_of(wa_id)
    async with kit.http("supervisor") as http:
        answer = await http.patch(f"/api/conversations/{conversation}", json={"ai_mode": "draft"})
        assert answer.status_code == 200, answer.text
        if assign_to:
            answer = await http.post(f"/api/conversations/{conversation}/assign",
                                     json={"assignee_id": str(kit.members[assign_to].id)})
            assert answer.status_code == 200, answer.text
    return wa_id


async def draft_over_the_api(kit: TenantKit, wa_id: str) -> list[dict[str, Any]]:
    conversation = await kit.conversation_of(wa_id)
    events = []
    async with kit.http("supervisor") as http, \
            http.stream("POST", f"/api/conversations/{conversation}/ai/draft", timeout=120) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["type"] == "final", events
    return events


async def open_menu_entry(page: Page, entry: str) -> None:
    await page.locator("#user-menu-toggle").click()
    await page.locator(f"#nav-{entry}").click()


async def no_sideways_scroll(page: Page, width: int) -> None:
    scroll = await page.evaluate("document.documentElement.scrollWidth")
    wide = await page.evaluate("""(limit) => [...document.querySelectorAll('body *')]
        .filter((el) => el.getBoundingClientRect().right > limit + 1 && !el.closest('.table-wrap *, .thread-actions *'))
        .map((el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`).slice(0, 8)""", width)
    assert scroll <= width and not wide, f"the page scrolls sideways ({scroll}px): {wide}"


# --- the Done-when scenario --------------------------------------------------------------------


async def test_an_agent_drafts_sees_it_stream_cancels_one_and_sends_another(
        ai_gateway: Gateway, ai_sim: AISimulator, tab: InboxPage, output: Path) -> None:
    kit = await tenant_with_faq(ai_gateway)
    wa_id = await customer_asks(kit, "Rita Sole", assign_to="agent")
    await tab.login(kit, role="agent")
    await tab.open("Rita Sole")
    page = tab.page
    panel = page.locator("#ai-panel")
    await expect(panel).to_have_attribute("data-state", "idle")
    await expect(page.locator("#ai-draft-button")).to_have_text(IT["ai.draftButton"])

    # a slow, long answer: the stages appear, then the text grows token by token
    ai_sim.set_default_reply(LONG_ANSWER)
    ai_sim.set_token_delay(0.05)
    closed_before = ai_sim.closed_early
    await page.locator("#ai-draft-button").click()
    await expect(panel).to_have_attribute("data-state", "streaming")
    stages = page.locator("#ai-stages .ai-stage")
    await expect(stages).to_have_count(4, timeout=30_000)
    assert [await s.get_attribute("data-stage") for s in await stages.all()] == \
        ["classifying", "searching", "found", "generating"]
    await expect(page.locator('.ai-stage[data-stage="found"] .ai-stage-text')).to_have_text(
        IT["ai.stage.found.one"].replace("{n}", "1").replace("{names}", "domande"))
    await expect(page.locator('.ai-stage[data-stage="generating"]')).to_have_class(re.compile(r"\bactive\b"))
    draft = page.locator("#ai-draft-text")
    await expect(draft).to_contain_text("L'esame della vista", timeout=30_000)
    lengths = []
    for _ in range(6):
        lengths.append(len(await draft.inner_text()))
        await asyncio.sleep(0.25)
    assert lengths == sorted(lengths) and len(set(lengths)) >= 4, f"the draft did not grow as it streamed: {lengths}"
    assert lengths[-1] < len(LONG_ANSWER)  # still streaming: there is something left to cancel
    await tab.screenshot(output, "streaming.png")

    await page.locator("#ai-cancel").click()
    await expect(panel).to_have_attribute("data-state", "cancelled")
    await expect(panel.locator(".ai-note")).to_have_text(IT["ai.cancelled"])
    assert await ai_sim.until(lambda: ai_sim.closed_early > closed_before, timeout=10), \
        "cancel did not close the provider's stream"
    stopped_at = len(await draft.inner_text())
    await asyncio.sleep(0.5)
    assert len(await draft.inner_text()) == stopped_at  # nothing more arrives once cancelled
    async with ai_gateway.connect() as conn:
        deadline = time.monotonic() + 10
        while await conn.fetchval("SELECT count(*) FROM ai_runs WHERE tenant_id = $1 AND status = 'cancelled'",
                                  kit.id) < 1:
            assert time.monotonic() < deadline, "the cancelled run was not recorded"
            await asyncio.sleep(0.1)
    await tab.screenshot(output, "cancelled.png")

    # asked again: a short answer with a citation lands in the composer, with its sources
    ai_sim.set_default_reply(ANSWER)
    ai_sim.set_token_delay(0.02)
    await page.locator("#ai-draft-button").click()
    await expect(panel).to_have_attribute("data-state", "final", timeout=30_000)
    composer = page.locator("#composer-input")
    await expect(composer).to_have_value("L'esame della vista costa 35 euro.")
    await expect(composer).to_be_focused()
    await expect(page.locator("#ai-sources .citation")).to_have_count(1)
    await expect(page.locator("#ai-sources .citation")).to_contain_text("domande")
    await expect(panel.locator(".ai-chip")).to_have_text(IT["ai.handler.knowledge"])
    await expect(page.locator("#ai-declined")).to_have_count(0)
    await expect(panel.locator(".ai-note")).to_have_text(IT["ai.inComposer"])
    await tab.screenshot(output, "final.png")

    # the agent edits the draft and sends it: Meta receives the edited text
    await composer.press("End")
    await composer.type(" Può prenotare anche online.")
    await composer.press("Enter")
    sent = "L'esame della vista costa 35 euro. Può prenotare anche online."
    sends = await eventually(lambda: ai_gateway.simulator.sends_to(wa_id), what="the draft to reach the simulator")
    assert sends[-1].text == sent
    await expect(tab.message("Può prenotare anche online")).to_be_visible(timeout=10_000)
    await expect(panel).to_have_attribute("data-state", "idle")  # a sent reply starts the panel afresh

    # nothing new from the customer: asking again says so readably
    await page.locator("#ai-draft-button").click()
    await expect(page.locator("#ai-error")).to_have_text(IT["ai.nothingToAnswer"])
    await expect(page.locator("#ai-retry")).to_be_visible()
    await tab.screenshot(output)
    tab.assert_clean(allow=("status of 409",))  # the refused draft's own answer


async def test_an_error_event_offers_a_retry_and_a_rate_limit_reads_well(
        ai_gateway: Gateway, ai_sim: AISimulator, tab: InboxPage, output: Path) -> None:
    kit = await tenant_with_faq(ai_gateway)
    await customer_asks(kit, "Ugo Lilla")
    await tab.login(kit)  # the supervisor
    await tab.open("Ugo Lilla")
    page = tab.page
    panel = page.locator("#ai-panel")

    ai_sim.fail_next(5, 529)  # overloaded, longer than the client's retries
    await page.locator("#ai-draft-button").click()
    await expect(panel).to_have_attribute("data-state", "error", timeout=60_000)
    await expect(page.locator("#ai-error")).to_contain_text(IT["ai.failed"])
    await tab.screenshot(output, "error-event.png")
    ai_sim.reset()  # faults the retries did not use
    ai_sim.set_default_reply(ANSWER)
    await page.locator("#ai-retry").click()
    await expect(panel).to_have_attribute("data-state", "final", timeout=30_000)
    await expect(page.locator("#composer-input")).to_have_value("L'esame della vista costa 35 euro.")

    # the per-tenant AI limit (429) with its Retry-After, as the server would answer it
    async def limited(route: Any) -> None:
        await route.fulfill(status=429, headers={"retry-after": "7"}, content_type="application/json",
                            body=json.dumps({"error": "too many AI requests", "code": "RateLimited"}))

    await page.route("**/ai/draft", limited)
    await page.locator("#ai-draft-button").click()
    await expect(page.locator("#ai-error")).to_have_text(IT["ai.busyFor"].replace("{s}", "7"))
    await tab.screenshot(output)
    tab.assert_clean(allow=("status of 429",))


async def test_an_auto_reply_is_shown_as_it_is_written_then_with_its_badge_and_sources(
        ai_gateway: Gateway, ai_sim: AISimulator, tab: InboxPage, output: Path) -> None:
    kit = await tenant_with_faq(ai_gateway)
    await tab.login(kit)  # the supervisor watches
    ai_sim.set_default_reply(" ".join(["L'esame della vista costa 35 euro [1]."] * 12))
    ai_sim.set_token_delay(0.05)
    wa_id = new_wa_id()
    await inbound(kit, wa_id, QUESTION, "Olga Menta")  # the conversation is in auto mode
    await tab.open("Olga Menta")
    page = tab.page
    auto = page.locator("#ai-auto")
    await expect(auto).to_contain_text(IT["ai.autoWriting"], timeout=AUTO_DEBOUNCE_S * 1000 + 30_000)
    await expect(auto.locator(".ai-draft-text")).to_contain_text("L'esame della vista", timeout=15_000)
    await tab.screenshot(output, "auto-writing.png")
    reply = page.locator("#timeline .message.outbound.ai")
    await expect(reply).to_have_count(1, timeout=30_000)
    await expect(reply.locator(".ai-chip")).to_have_text(IT["message.aiBadge"])
    await expect(reply.locator(".citation")).to_contain_text("domande")
    await expect(reply).to_have_attribute("aria-label", IT["message.fromAi"])
    await expect(auto).to_have_count(0)
    sends = await eventually(lambda: ai_gateway.simulator.sends_to(wa_id), what="the auto-reply to reach Meta")
    assert sends[-1].text.startswith("L'esame della vista costa 35 euro.") and "[1]" not in sends[-1].text
    await tab.screenshot(output)
    tab.assert_clean()


# --- admin pages -------------------------------------------------------------------------------


async def test_the_usage_page_shows_the_spend_after_a_draft(ai_gateway: Gateway, browser: Browser, tab: InboxPage,
                                                            output: Path) -> None:
    kit = await tenant_with_faq(ai_gateway)
    wa_id = await customer_asks(kit, "Vera Blu")
    final = (await draft_over_the_api(kit, wa_id))[-1]
    assert final["usage"]["cost_usd"] > 0
    await tab.login(kit, role="admin")
    page = tab.page
    await open_menu_entry(page, "usage")
    await expect(page.locator("#usage-page")).to_be_visible()
    spend = page.locator("#usage-month-spend")
    await expect(spend).to_contain_text(re.compile(r"[1-9]"))  # not 0,00
    await expect(page.locator("#usage-runs")).to_have_text("1")
    await expect(page.locator("#usage-by-handler tbody tr")).to_have_count(1)
    await expect(page.locator("#usage-by-handler tbody")).to_contain_text(IT["ai.handler.knowledge"])
    await expect(page.locator("#usage-by-source tbody")).to_contain_text("domande")
    await expect(page.locator("#usage-by-day tbody tr")).to_have_count(1)
    assert "#usage" in page.url
    await tab.screenshot(output, "usage.png")
    # a reload stays on the page; the back button returns to the conversations
    await page.reload()
    await tab.wait_live()
    await expect(page.locator("#usage-page")).to_be_visible()
    await page.locator("#admin-back").click()
    await expect(page.locator(".sidebar")).to_be_visible()
    tab.assert_clean()

    phone = await open_inbox(browser, ai_gateway, viewport=PHONE)
    try:
        await phone.login(kit, role="admin")
        await open_menu_entry(phone.page, "usage")
        await expect(phone.page.locator("#usage-month-spend")).to_contain_text(re.compile(r"[1-9]"))
        await no_sideways_scroll(phone.page, PHONE["width"])
        await phone.screenshot(output, "usage-phone.png")
        await open_menu_entry(phone.page, "knowledge")
        await expect(phone.page.locator("#knowledge-page")).to_be_visible()
        await no_sideways_scroll(phone.page, PHONE["width"])
        await phone.screenshot(output, "knowledge-phone.png")
        phone.assert_clean(allow=("status of 404",))  # the knowledge base routes may not exist yet
    finally:
        await phone.context.close()


async def test_the_knowledge_page_lists_a_source_and_shows_a_sync(ai_gateway: Gateway, wp: WordPressSimulator,
                                                                  tab: InboxPage, output: Path) -> None:
    kit = await tenant_with_faq(ai_gateway)
    async with kit.http("admin") as http:
        listed = await http.get("/api/kb/sources")
    if listed.status_code in (404, 405):
        pytest.skip("GET /api/kb/sources is not served yet (the knowledge base routes are missing)")
    assert listed.status_code == 200, listed.text
    await tab.login(kit, role="admin")
    page = tab.page
    await open_menu_entry(page, "knowledge")
    await expect(page.locator("#knowledge-page")).to_be_visible()
    existing = page.locator(".kb-source", has_text="domande")
    await expect(existing).to_be_visible()
    await expect(existing).to_have_attribute("data-kind", "faq")

    # record every state and progress stage the new source's card goes through
    await page.evaluate("""() => {
        window.__kbSeen = [];
        new MutationObserver(() => {
          for (const card of document.querySelectorAll('.kb-source')) {
            const name = card.querySelector('.kb-source-name')?.textContent;
            const stage = card.querySelector('.kb-progress')?.dataset.stage || '';
            const entry = `${name}|${card.dataset.state}|${stage}`;
            if (window.__kbSeen.at(-1) !== entry) window.__kbSeen.push(entry);
          }
        }).observe(document.body, { subtree: true, childList: true, attributes: true });
      }""")
    guide = "\n\n".join(f"## Servizio {n}\n\nIl servizio {n} costa {10 + n} euro e si prenota in negozio."
                        for n in range(1, 40))
    await page.locator("#kb-file").set_input_files(files=[{
        "name": "listino.md", "mimeType": "text/markdown", "buffer": f"# Listino\n\n{guide}\n".encode()}])
    await page.locator("#kb-upload").click()
    card = page.locator(".kb-source", has_text="listino")
    await expect(card).to_be_visible(timeout=10_000)
    await expect(card).to_have_attribute("data-state", "ok", timeout=60_000)
    await expect(card.locator(".state-badge")).to_have_text(IT["kb.state.ok"])
    await expect(card.locator(".kb-counts")).to_contain_text(re.compile(r"[1-9]\d* passagg"))
    seen = [e for e in await page.evaluate("window.__kbSeen") if e.startswith("listino|")]
    print("the new source's card went through:", seen)
    assert any(e.split("|")[1] == "syncing" for e in seen), f"the sync's state was never shown: {seen}"
    assert any(e.split("|")[2] for e in seen), f"no progress bar was shown during the sync: {seen}"
    await tab.screenshot(output, "knowledge.png")

    # a WordPress site: added by its address, synced now again after a new page, then failing
    for n, title in enumerate(("Chi siamo", "Orari", "Lenti a contatto"), start=1):
        wp.put("page", n, title, f"<p>{title}: tutto quello che c'è da sapere sul negozio, pagina {n}.</p>")
    await page.locator("#kb-wordpress-url").fill(wp.site_url + "/")
    await page.locator("#kb-wordpress-name").fill("Sito del negozio")
    await page.locator("#kb-add-site").click()
    site = page.locator('.kb-source[data-kind="wordpress"]')
    await expect(site).to_have_attribute("data-state", "ok", timeout=60_000)
    await expect(site.locator(".kb-source-name")).to_have_text("Sito del negozio")
    await expect(site.locator(".kb-counts")).to_contain_text(IT["kb.documents.other"].replace("{n}", "3"))
    await expect(site.locator(".kb-source-url")).to_have_attribute("href", wp.site_url + "/")
    wp.put("post", 10, "Saldi", "<p>Saldi estivi: montature scontate del 30 per cento fino a fine luglio.</p>")
    await site.locator(".kb-sync").click()
    await expect(site.locator(".kb-counts")).to_contain_text(IT["kb.documents.other"].replace("{n}", "4"), timeout=60_000)
    await expect(site).to_have_attribute("data-state", "ok")
    wp.set_fault("html")
    try:
        await site.locator(".kb-sync").click()
        await expect(site).to_have_attribute("data-state", "failed", timeout=60_000)
        await expect(site.locator(".state-badge")).to_have_text(IT["kb.state.failed"])
        await expect(site.locator(".kb-error")).to_be_visible()
        await expect(site.locator(".kb-counts")).to_contain_text(IT["kb.documents.other"].replace("{n}", "4"))  # kept
    finally:
        wp.set_fault(None)
    await tab.screenshot(output, "knowledge-wordpress.png")

    # removal asks first
    await card.locator(".kb-remove").click()
    await expect(card.locator(".kb-confirm")).to_contain_text("listino")
    await card.get_by_role("button", name=IT["kb.removeYes"]).click()
    await expect(page.locator(".kb-source", has_text="listino")).to_have_count(0, timeout=10_000)
    await expect(existing).to_be_visible()
    await tab.screenshot(output)
    tab.assert_clean()


class _Renamed:
    """The offline model under another embedder's name: chunks as a Voyage/OpenAI switch leaves them."""

    def __init__(self, inner: Any, name: str) -> None:
        self.inner, self.name, self.dim = inner, name, inner.dim

    def passages(self, texts: Any) -> Any:
        return self.inner.passages(texts)

    def query(self, text: str) -> Any:
        return self.inner.query(text)


async def test_a_file_indexed_by_another_embedder_is_indexed_again_from_its_card(ai_gateway: Gateway,
                                                                                 tab: InboxPage, output: Path) -> None:
    kit = await ai_gateway.tenant()
    other = "openai:text-embedding-3-small@384"
    async with ai_gateway.connect() as conn:
        source = await store.add_source(conn, kit.id, "faq", "domande")
        await store.sync_documents(conn, source, extract("domande.csv", FAQ),
                                   _Renamed(offline_embedder(ai_gateway.settings), other))
    await tab.login(kit, role="admin")
    page = tab.page
    await open_menu_entry(page, "knowledge")
    card = page.locator(".kb-source", has_text="domande")
    button = card.locator(".kb-sync")
    await expect(button).to_have_text(IT["kb.reembed"])
    await expect(button).to_have_attribute("title", re.compile(re.escape(ai_gateway_embedder(ai_gateway))))
    await expect(card.locator(".kb-replace")).to_be_visible()  # new content still comes by upload
    await tab.screenshot(output, "stale.png")
    await button.click()
    await expect(card).to_have_attribute("data-state", "ok", timeout=60_000)
    await expect(card.locator(".kb-sync")).to_have_count(0, timeout=10_000)  # nothing left to index again
    async with ai_gateway.connect() as conn:
        embedders = {r["embedder"] for r in await conn.fetch(
            "SELECT DISTINCT c.embedder FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id "
            "WHERE d.source_id = $1", source.id)}
    assert embedders == {ai_gateway_embedder(ai_gateway)}
    tab.assert_clean()


def ai_gateway_embedder(gateway: Gateway) -> str:
    from engine.ai.providers.factory import embedder_name

    return embedder_name(gateway.settings)


async def test_agents_and_supervisors_do_not_see_the_admin_pages(ai_gateway: Gateway, browser: Browser,
                                                                 output: Path) -> None:
    kit = await ai_gateway.tenant()
    for role in ("agent", "supervisor"):
        inbox = await open_inbox(browser, ai_gateway)
        try:
            await inbox.login(kit, role=role)
            page = inbox.page
            await page.locator("#user-menu-toggle").click()
            await expect(page.locator(".user-menu")).to_be_visible()
            await expect(page.locator(".user-menu .nav-item")).to_have_count(0)
            await inbox.screenshot(output, f"{role}-menu.png")
            for address in ("#knowledge", "#usage"):  # typed by hand: still the inbox
                await page.goto(f"{ai_gateway.base_url}/{address}")
                await inbox.wait_live()
                await expect(page.locator(".sidebar")).to_be_visible()
                await expect(page.locator(".admin-page")).to_have_count(0)
            inbox.assert_clean()
        finally:
            await inbox.context.close()
    async with kit.http("agent") as http:
        assert (await http.get("/api/ai/usage")).status_code == 403


async def test_the_language_switch_covers_the_ai_panel_and_the_admin_pages(
        ai_gateway: Gateway, tab: InboxPage, output: Path) -> None:
    kit = await tenant_with_faq(ai_gateway)
    await customer_asks(kit, "Nina Corallo")
    await tab.login(kit, role="admin")
    page = tab.page
    await tab.open("Nina Corallo")
    await page.locator("#ai-draft-button").click()
    await expect(page.locator("#ai-panel")).to_have_attribute("data-state", "final", timeout=30_000)
    assert IT["ai.sources"] in await visible_strings(page)

    await page.locator("#language-switch").select_option("en")
    await expect(page.locator("#ai-draft-button")).to_have_text(EN["ai.again"])
    await expect(page.locator('.ai-stage[data-stage="found"] .ai-stage-text')).to_have_text("Found 1 source: domande")
    leftovers = italian_leftovers(await visible_strings(page))
    assert not leftovers, leftovers
    await tab.screenshot(output, "english-draft.png")

    await open_menu_entry(page, "usage")
    await expect(page.locator("#usage-title")).to_have_text(EN["usage.title"])
    await expect(page.locator("#usage-by-handler tbody")).to_contain_text(EN["ai.handler.knowledge"])
    leftovers = italian_leftovers(await visible_strings(page))
    assert not leftovers, leftovers
    await tab.screenshot(output, "english-usage.png")

    await open_menu_entry(page, "knowledge")
    await expect(page.locator("#knowledge-title")).to_have_text(EN["kb.title"])
    await expect(page.locator(".kb-source, #kb-unavailable").first).to_be_visible(timeout=10_000)
    await page.locator("#user-menu-toggle").click()  # the menu's entries too
    leftovers = italian_leftovers(await visible_strings(page))
    assert not leftovers, leftovers
    await tab.screenshot(output)
    tab.assert_clean(allow=("status of 404",))  # the knowledge base routes may not exist yet
