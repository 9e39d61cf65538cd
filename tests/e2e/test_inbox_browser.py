"""The web inbox in a real browser (Debian's Chromium, headless, Playwright's async API) against the
real Serve app, with the Cloud API simulator as Meta.

Each test makes its own tenant and saves a screenshot into its output folder (printed; under
pytest's tmp_path).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, async_playwright, expect

from bench.simulator import payloads
from engine.whatsapp import templates
from engine.whatsapp.graph import GraphClient
from tests.api_harness import Gateway, TenantKit
from tests.e2e.browser import (CHROMIUM, CHROMIUM_ARGS, PHONE, InboxPage, italian_leftovers, open_inbox, strings,
                               visible_strings)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]

IT, EN = strings("it"), strings("en")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def output(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    folder = tmp_path / "output"
    folder.mkdir()
    print(f"\n{request.node.name}: screenshots in {folder}")
    return folder


@pytest.fixture
async def tab(browser: Browser, gateway: Gateway, output: Path) -> AsyncIterator[InboxPage]:
    inbox = await open_inbox(browser, gateway)
    try:
        yield inbox
    finally:
        await inbox.screenshot(output, "last.png")  # how the page looked when the test ended, passed or not
        await inbox.context.close()


def new_wa_id() -> str:
    return f"39333{secrets.randbelow(10**7):07d}"


async def inbound(kit: TenantKit, wa_id: str, text: str, name: str, *, timestamp: float | None = None) -> None:
    """A signed inbound message, waited for until stored; redelivered with the same wamid (a no-op
    once stored, as Meta's retries are) if it is not there within a second, so a test never races
    the webhook receiver's view of a tenant created a moment ago."""
    wamid = f"wamid.{secrets.token_hex(12)}"
    deadline = time.monotonic() + 20
    while True:
        answer = await asyncio.to_thread(kit.inbound, wa_id, text, name=name, wamid=wamid, timestamp=timestamp)
        assert answer.status_code == 200, answer.text
        for _ in range(10):
            async with kit.gateway.connect() as conn:
                if await conn.fetchval("SELECT 1 FROM messages WHERE tenant_id = $1 AND wamid = $2", kit.id, wamid):
                    return
            await asyncio.sleep(0.1)
        assert time.monotonic() < deadline, f"the inbound message {wamid} was never stored"


async def post_status(kit: TenantKit, wamid: str, wa_id: str, state: str, **kwargs: Any) -> None:
    payload = payloads.status_webhook(payloads.status(wamid, state, wa_id, **kwargs), waba_id=kit.waba_id,
                                      phone_number_id=kit.phone_number_id, display_phone_number=kit.display_phone)
    answer = await asyncio.to_thread(kit.post_webhook, payload)
    assert answer.status_code == 200, answer.text


async def eventually(check: Callable[[], Any], timeout_s: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


# --- serving -----------------------------------------------------------------------------------


async def test_the_page_and_its_assets_are_served_strictly(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=15) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self' ws: wss:" in csp and "img-src 'self' blob: data:" in csp
        assert "unsafe-inline" not in csp and "<script>" not in page.text  # the page has no inline script
        assert (await http.get("/web/app.js")).headers["content-type"].startswith("text/javascript")
        assert (await http.get("/web/vendor/preact.module.js")).headers["content-type"].startswith("text/javascript")
        i18n = await http.get("/web/i18n/it.json")
        assert i18n.headers["content-type"].startswith("application/json") and i18n.json()["login.submit"]
        assert (await http.get("/web/styles.css")).headers["content-type"].startswith("text/css")
        assert (await http.get("/web/app.js")).headers["x-content-type-options"] == "nosniff"
        for path in ("/web/../serve_app.py", "/web/%2e%2e/serve_app.py", "/web/..%2fserve_app.py",
                     "/web/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/web/vendor/../../serve_app.py", "/web/vendor/README.md",
                     "/web/vendor/LICENSE.htm", "/web/.gitignore", "/web/lib/%5c..%5capi.js", "/web/", "/web/nothing.js"):
            answer = await http.get(path)
            assert answer.status_code == 404, (path, answer.status_code)
            assert "import" not in answer.text and "root:" not in answer.text


def test_both_languages_have_the_same_strings() -> None:
    assert IT.keys() == EN.keys()
    assert all(value.strip() for value in [*IT.values(), *EN.values()])


# --- the Done-when scenarios ------------------------------------------------------------------


async def test_login_errors_then_signs_in(gateway: Gateway, tab: InboxPage, output: Path) -> None:
    kit = await gateway.tenant()
    page = tab.page
    await page.goto(f"{gateway.base_url}/")
    assert await page.evaluate("document.documentElement.lang") == "it"
    await tab.fill_login(kit.slug, kit.members["agent"].email, "not the password")
    await page.locator("button[type=submit]").click()
    await expect(page.locator(".form-error")).to_have_text(IT["login.failed"])
    await tab.screenshot(output, "login-error.png")

    await tab.fill_login(kit.slug, kit.members["agent"].email, "una password lunga e sicura")
    await page.locator("button[type=submit]").click()
    await tab.wait_live()
    await expect(page.locator(".me-name")).to_have_text(kit.members["agent"].name)
    # a reload restores the session from the httpOnly refresh cookie (the access token lived in memory only)
    assert "parlo_refresh" not in await page.evaluate("document.cookie")
    await page.reload()
    await tab.wait_live()
    await tab.screenshot(output)
    tab.assert_clean(allow=("401",))  # the failed login's own answer


async def test_an_inbound_message_appears_live_and_the_reply_reaches_meta_with_ticks(
        gateway: Gateway, tab: InboxPage, output: Path) -> None:
    kit = await gateway.tenant()
    await tab.login(kit)
    page = tab.page
    await expect(page.locator(".empty")).to_have_text(IT["list.empty"])

    wa_id = new_wa_id()
    await inbound(kit, wa_id, "Buongiorno, il mio ordine non è arrivato", "Marta Rossi")
    row = tab.conversation("Marta Rossi")
    await expect(row).to_be_visible(timeout=10_000)  # no reload: the WebSocket hint did it
    await expect(row.locator(".badge")).to_have_text("1")
    await expect(row.locator(".conversation-preview")).to_have_text("Buongiorno, il mio ordine non è arrivato")

    await tab.open("Marta Rossi")
    await expect(tab.message("il mio ordine non è arrivato")).to_be_visible()
    await expect(page.locator("#window-countdown")).to_have_attribute("data-open", "true")

    # a second message while the thread is open arrives in it, live
    await inbound(kit, wa_id, "È il numero 4711", "Marta Rossi")
    await expect(tab.message("È il numero 4711")).to_be_visible(timeout=10_000)

    await tab.reply("Ci scusiamo: lo spediamo oggi stesso.")
    sends = await eventually(lambda: gateway.simulator.sends_to(wa_id), what="the simulator to receive the reply")
    assert sends[-1].text == "Ci scusiamo: lo spediamo oggi stesso."
    wamid = sends[-1].wamid

    mine = tab.message("lo spediamo oggi stesso")
    ticks = mine.locator(".ticks")
    await expect(ticks).to_have_attribute("data-status", "sent", timeout=10_000)
    for state in ("delivered", "read"):
        await post_status(kit, wamid, wa_id, state)
        await expect(ticks).to_have_attribute("data-status", state, timeout=10_000)
    await expect(ticks).to_have_attribute("aria-label", IT["tick.read"])
    # the list moved the conversation's preview to our reply
    await expect(row.locator(".conversation-preview")).to_contain_text("lo spediamo oggi stesso")
    await tab.screenshot(output)
    tab.assert_clean()


async def test_a_failed_send_shows_metas_reason(gateway: Gateway, tab: InboxPage, output: Path) -> None:
    kit = await gateway.tenant()
    wa_id = new_wa_id()
    await inbound(kit, wa_id, "Ciao", "Paolo Neri")
    await tab.login(kit)
    await tab.open("Paolo Neri")
    await tab.reply("Questo non arriverà")
    sends = await eventually(lambda: gateway.simulator.sends_to(wa_id), what="the send")
    await post_status(kit, sends[-1].wamid, wa_id, "failed", error_code=131026,
                      error_details="Message undeliverable: the number is not on WhatsApp")
    ticks = tab.message("Questo non arriverà").locator(".ticks")
    await expect(ticks).to_have_attribute("data-status", "failed", timeout=10_000)
    title = await ticks.get_attribute("title")
    assert title and title.startswith(IT["tick.failed"]), title
    await tab.screenshot(output)
    tab.assert_clean()


async def test_with_the_window_closed_only_a_template_can_be_sent(gateway: Gateway, tab: InboxPage, output: Path) -> None:
    kit = await gateway.tenant()
    wa_id = new_wa_id()
    await inbound(kit, wa_id, "Vorrei un aggiornamento", "Sara Bianchi")
    conversation_id = await kit.conversation_of(wa_id)
    gateway.simulator.add_template(kit.waba_id, "ordine_pronto", "it", components=[
        {"type": "BODY", "text": "Ciao {{1}}, il tuo ordine {{2}} è pronto."}])
    async with gateway.connect() as conn:
        await conn.execute("UPDATE conversations SET last_inbound_at = now() - interval '25 hours' WHERE id = $1",
                           conversation_id)
        async with GraphClient(kit.access_token, base_url=gateway.simulator.base_url,
                               api_version=gateway.simulator.api_version) as graph:
            assert await templates.sync(conn, graph, kit.id, kit.waba_id) >= 1

    await tab.login(kit)
    await tab.open("Sara Bianchi")
    page = tab.page
    await expect(page.locator("#window-countdown")).to_have_attribute("data-open", "false")
    await expect(page.locator("#template-picker")).to_be_visible()
    await expect(page.locator("#composer-input")).to_have_count(0)  # the free-text composer is gone

    await page.locator("#template-select").select_option(label="ordine_pronto · it")
    params = page.locator(".template-param")
    await expect(params).to_have_count(2)
    await params.nth(0).fill("Sara")
    await params.nth(1).fill("A-4711")
    await expect(page.locator(".template-preview .text")).to_have_text("Ciao Sara, il tuo ordine A-4711 è pronto.")
    await tab.screenshot(output, "template-picker.png")
    await page.locator("#template-send").click()

    sends = await eventually(lambda: gateway.simulator.sends_to(wa_id), what="the template send")
    assert sends[-1].type == "template"
    template = sends[-1].payload["template"]
    assert template["name"] == "ordine_pronto"
    assert [p["text"] for c in template.get("components", []) for p in c.get("parameters", [])] == ["Sara", "A-4711"]
    await expect(page.locator("#timeline .message.outbound")).to_have_count(1, timeout=10_000)
    # notes stay possible with the window closed
    await page.locator("#tab-note").click()
    await expect(page.locator("#composer-input")).to_be_visible()
    await tab.screenshot(output)
    tab.assert_clean()


async def test_the_language_switch_changes_every_visible_string(gateway: Gateway, tab: InboxPage, output: Path) -> None:
    kit = await gateway.tenant()
    await inbound(kit, new_wa_id(), "Salve", "Luca Verdi")
    await tab.login(kit)
    page = tab.page
    await tab.open("Luca Verdi")
    await page.locator("#contact-toggle").click()
    await expect(page.locator("#contact-panel")).to_be_visible()
    assert IT["composer.send"] in await visible_strings(page)

    await page.locator("#language-switch").select_option("en")
    await expect(page.locator("#send-button")).to_have_text(EN["composer.send"])
    assert await page.evaluate("document.documentElement.lang") == "en"
    leftovers = italian_leftovers(await visible_strings(page))
    assert not leftovers, leftovers
    await tab.screenshot(output, "english-thread.png")

    # other surfaces, in English too: the shortcut help, the notes tab, the notifications and the team chat
    await page.locator("#tab-note").click()
    await page.locator("#notifications-toggle").click()
    assert not italian_leftovers(await visible_strings(page))
    await page.keyboard.press("Escape")
    await page.locator("#team-chat-toggle").click()
    await expect(page.locator("#team-chat")).to_be_visible()
    assert not italian_leftovers(await visible_strings(page))
    await page.locator("body").click(position={"x": 600, "y": 400})
    await page.keyboard.press("?")
    await expect(page.locator("#shortcut-help")).to_be_visible()
    leftovers = italian_leftovers(await visible_strings(page))
    assert not leftovers, leftovers
    await tab.screenshot(output)

    # the choice persists (and the session survives the reload)
    await page.reload()
    await tab.wait_live()
    await expect(page.locator(".placeholder p").first).to_have_text(EN["thread.none"])
    tab.assert_clean()


async def test_another_tenant_sees_nothing_of_it(gateway: Gateway, browser: Browser, tab: InboxPage,
                                                 output: Path) -> None:
    kit_a, kit_b = await gateway.tenant(), await gateway.tenant()
    other = await open_inbox(browser, gateway)
    try:
        await tab.login(kit_a)
        await other.login(kit_b, role="owner")  # the owner sees every conversation of their own tenant
        wa_id = new_wa_id()
        await inbound(kit_a, wa_id, "Dati riservati: IBAN IT60X0542811101000000123456", "Giulia Riservata")
        await expect(tab.conversation("Giulia Riservata")).to_be_visible(timeout=10_000)
        await asyncio.sleep(1.5)  # give a leak every chance to arrive
        content = await other.page.content()
        assert "Giulia Riservata" not in content and "IBAN" not in content
        await expect(other.page.locator(".conversation")).to_have_count(0)
        await other.page.locator("#conversation-search").fill("Giulia")
        await asyncio.sleep(0.8)
        await expect(other.page.locator(".conversation")).to_have_count(0)
        conversation_id = await kit_a.conversation_of(wa_id)
        async with kit_b.http("owner") as http:
            assert (await http.get(f"/api/conversations/{conversation_id}")).status_code == 404
        await other.screenshot(output, "other-tenant.png")
        await tab.screenshot(output)
        tab.assert_clean()
        other.assert_clean()
    finally:
        await other.context.close()


async def test_a_killed_connection_resumes_without_loss(gateway: Gateway, tab: InboxPage, output: Path) -> None:
    kit = await gateway.tenant()
    wa_id = new_wa_id()
    await inbound(kit, wa_id, "Primo messaggio", "Anna Gialli")
    sockets: list[str] = []
    tab.page.on("websocket", lambda ws: sockets.append(ws.url))
    await tab.login(kit)
    await tab.open("Anna Gialli")
    page = tab.page
    await inbound(kit, wa_id, "Secondo messaggio", "Anna Gialli")  # an event, so there is a last id to resume from
    await expect(tab.message("Secondo messaggio")).to_be_visible(timeout=10_000)

    await tab.context.set_offline(True)
    await expect(page.locator("#connection")).not_to_have_attribute("data-state", "live", timeout=10_000)
    missed = [f"Messaggio perso {n}" for n in range(1, 4)]
    for text in missed:
        await inbound(kit, wa_id, text, "Anna Gialli")
    other = new_wa_id()
    await inbound(kit, other, "Nuovo cliente mentre eri offline", "Bruno Blu")
    await asyncio.sleep(1)
    await expect(tab.message("Messaggio perso 1")).to_have_count(0)  # the connection really was down
    await tab.screenshot(output, "offline.png")

    await tab.context.set_offline(False)
    await tab.wait_live()
    for text in missed:
        await expect(tab.message(text)).to_be_visible(timeout=10_000)
    await expect(tab.conversation("Bruno Blu")).to_be_visible(timeout=10_000)
    assert await page.locator("#timeline .message.inbound").count() == 5  # nothing lost, nothing twice
    assert len(sockets) >= 2 and "last_id=" in sockets[-1], sockets  # it resumed from the last event it saw
    await tab.screenshot(output)
    tab.assert_clean(allow=("ERR_INTERNET_DISCONNECTED", "WebSocket"))


async def test_script_in_a_message_is_rendered_as_text(gateway: Gateway, tab: InboxPage, output: Path) -> None:
    kit = await gateway.tenant()
    hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script><b id="injected">bold</b>'
    await tab.login(kit)
    await inbound(kit, new_wa_id(), hostile, "<i>Mallory</i>")
    row = tab.conversation("<i>Mallory</i>")
    await expect(row).to_be_visible(timeout=10_000)
    await expect(row.locator(".conversation-preview")).to_have_text(hostile)
    await row.click()
    await expect(tab.message("onerror")).to_have_count(1)
    assert await tab.message("onerror").locator(".text").inner_text() == hostile
    page = tab.page
    assert await page.locator("#injected").count() == 0
    assert await page.locator("#timeline img, .conversation-list img, i, script:not([src])").count() == 0
    await page.wait_for_timeout(500)
    await tab.screenshot(output)
    tab.assert_clean()  # no alert() dialog, no error


async def test_notes_with_mentions_canned_replies_and_quoted_replies(gateway: Gateway, tab: InboxPage,
                                                                     output: Path) -> None:
    kit = await gateway.tenant()
    wa_id = new_wa_id()
    await inbound(kit, wa_id, "Avete la taglia M?", "Elena Viola")
    async with kit.http("admin") as http:
        answer = await http.post("/api/canned", json={"shortcut": "taglie", "title": "Taglie",
                                                      "body": "Sì, abbiamo tutte le taglie dalla S alla XL."})
        assert answer.status_code == 201, answer.text
    await tab.login(kit)
    await tab.open("Elena Viola")
    page = tab.page

    # "/" looks up canned replies; Enter picks one
    box = page.locator("#composer-input")
    await box.fill("/tag")
    await expect(page.locator("#canned-list li")).to_have_count(1)
    await box.press("Enter")
    await expect(box).to_have_value("Sì, abbiamo tutte le taglie dalla S alla XL.")
    # a quoted reply to the customer's message
    await tab.message("taglia M").hover()
    await tab.message("taglia M").get_by_role("button", name=IT["message.reply"]).click()
    await expect(page.locator("#reply-bar")).to_contain_text("taglia M")
    await box.press("Enter")
    sends = await eventually(lambda: gateway.simulator.sends_to(wa_id), what="the quoted reply")
    assert sends[-1].payload.get("context", {}).get("message_id"), sends[-1].payload
    await expect(tab.message("dalla S alla XL").locator(".quote")).to_contain_text("taglia M")

    # an internal note mentioning the agent
    agent = kit.members["agent"]
    await page.locator("#tab-note").click()
    await box.fill("Controlla il magazzino @" + agent.name.split()[0][:3])
    await expect(page.locator("#mention-list li").first).to_contain_text(agent.name)
    await box.press("Enter")
    await box.type("per favore")
    await box.press("Enter")
    note = page.locator("#timeline .note")
    await expect(note).to_have_count(1)
    await expect(note.locator("mark.mention")).to_have_text("@" + agent.email.split("@")[0])
    async with kit.http("agent") as http:
        found = await http.get("/api/notifications")
        assert found.status_code == 200 and found.json()["unread_count"] >= 1, found.text
    await tab.screenshot(output)
    tab.assert_clean()


async def test_keyboard_shortcuts_and_phone_layout(gateway: Gateway, browser: Browser, output: Path) -> None:
    kit = await gateway.tenant()
    numbers = {"Uno Primo": new_wa_id(), "Due Secondo": new_wa_id()}
    for age_s, name in ((120, "Uno Primo"), (0, "Due Secondo")):
        await inbound(kit, numbers[name], f"Messaggio di {name}", name, timestamp=time.time() - age_s)
    desktop = await open_inbox(browser, gateway)
    try:
        await desktop.login(kit)
        page = desktop.page
        await expect(page.locator(".conversation")).to_have_count(2, timeout=10_000)
        await page.locator("body").click(position={"x": 700, "y": 400})
        await page.keyboard.press("j")
        await expect(page.locator("#thread-title")).to_have_text("Due Secondo")  # newest first
        await page.keyboard.press("j")
        await expect(page.locator("#thread-title")).to_have_text("Uno Primo")
        await page.keyboard.press("k")
        await expect(page.locator("#thread-title")).to_have_text("Due Secondo")
        await page.keyboard.press("r")
        await expect(page.locator("#composer-input")).to_be_focused()
        await page.keyboard.press("Escape")
        await page.keyboard.press("?")
        await expect(page.locator("#shortcut-help")).to_be_visible()
        await page.keyboard.press("Escape")
        await expect(page.locator("#shortcut-help")).to_have_count(0)
        # live reordering: a new message moves its conversation to the top
        names = page.locator(".conversation .conversation-name")
        await expect(names).to_have_text(["Due Secondo", "Uno Primo"])
        await inbound(kit, numbers["Uno Primo"], "Ci sono novità?", "Uno Primo")
        await expect(names).to_have_text(["Uno Primo", "Due Secondo"], timeout=10_000)
        await desktop.screenshot(output, "desktop.png")
        desktop.assert_clean()
    finally:
        await desktop.context.close()

    phone = await open_inbox(browser, gateway, viewport=PHONE)
    try:
        await phone.login(kit)
        page = phone.page
        await expect(page.locator(".sidebar")).to_be_visible()
        await expect(page.locator(".thread-area")).to_be_hidden()
        await phone.screenshot(output, "phone-list.png")
        await phone.open("Uno Primo")
        await expect(page.locator(".sidebar")).to_be_hidden()
        await expect(page.locator("#composer-input")).to_be_visible()
        width = await page.evaluate("document.documentElement.scrollWidth")
        wide = await page.evaluate("""(limit) => [...document.querySelectorAll('body *')]
            .filter((el) => el.getBoundingClientRect().right > limit + 1 && !el.closest('.thread-actions *'))
            .map((el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`).slice(0, 8)""",
                                   PHONE["width"])
        assert width <= PHONE["width"], f"the page scrolls sideways ({width}px): {wide}"
        await phone.screenshot(output)
        await page.get_by_role("button", name=IT["thread.back"]).click()
        await expect(page.locator(".sidebar")).to_be_visible()
        phone.assert_clean()
    finally:
        await phone.context.close()



def tiny_png(width: int = 24, height: int = 16, rgb: tuple[int, int, int] = (31, 111, 92)) -> bytes:
    """A real PNG, made without an imaging library."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


async def test_media_previews_uploads_and_reactions(gateway: Gateway, tab: InboxPage, output: Path) -> None:
    kit = await gateway.tenant()
    wa_id = new_wa_id()
    await inbound(kit, wa_id, "Vi mando una foto del pacco", "Carla Rosa")
    await tab.login(kit)
    await tab.open("Carla Rosa")
    page = tab.page

    # an inbound photo: fetched with the bearer token and shown from a blob: URL
    photo = tiny_png()
    media_id = gateway.simulator.add_media(photo, "image/png", phone_number_id=kit.phone_number_id)
    sha256 = base64.b64encode(hashlib.sha256(photo).digest()).decode()  # as Meta announces it
    payload = payloads.inbound(payloads.image_message(wa_id, media_id, mime_type="image/png", caption="Il pacco",
                                                      sha256=sha256),
                               waba_id=kit.waba_id, phone_number_id=kit.phone_number_id,
                               display_phone_number=kit.display_phone, profile_name="Carla Rosa")
    assert (await asyncio.to_thread(kit.post_webhook, payload)).status_code == 200
    image = page.locator("#timeline img.media-image")
    await expect(image).to_have_count(1, timeout=15_000)
    await expect(image).to_have_attribute("src", re.compile(r"^blob:"), timeout=15_000)
    assert await image.evaluate("img => img.complete && img.naturalWidth") == 24

    # an attachment from the composer goes to Meta (upload, then send)
    await page.locator("#attach-input").set_input_files(
        files=[{"name": "etichetta.png", "mimeType": "image/png", "buffer": tiny_png(40, 40, (200, 80, 40))}])
    sends = await eventually(lambda: [s for s in gateway.simulator.sends_to(wa_id) if s.type == "image"],
                             what="the uploaded image to reach the simulator")
    assert sends[-1].payload["image"].get("id") or sends[-1].payload["image"].get("link")
    await expect(page.locator("#timeline .message.outbound img.media-image")).to_have_count(1, timeout=10_000)

    # a reaction to the customer's text
    customer = tab.message("foto del pacco")
    await customer.hover()
    await customer.get_by_role("button", name=IT["message.react"]).click()
    await customer.locator(".reaction-picker button", has_text="👍").click()
    reactions = await eventually(lambda: [s for s in gateway.simulator.sends_to(wa_id) if s.type == "reaction"],
                                 what="the reaction to reach the simulator")
    assert reactions[-1].payload["reaction"]["emoji"] == "👍"
    await expect(customer.locator(".reactions li.own")).to_have_text("👍", timeout=10_000)
    await tab.screenshot(output)
    tab.assert_clean(allow=("status of 409",))  # the photo was still being downloaded from Meta: retried


async def test_assign_label_and_resolve(gateway: Gateway, tab: InboxPage, output: Path) -> None:
    kit = await gateway.tenant()
    await inbound(kit, new_wa_id(), "Serve una fattura", "Dario Grigi")
    async with kit.http("admin") as http:
        answer = await http.post("/api/labels", json={"name": "Fatture", "color": "#d92d20"})
        assert answer.status_code == 201, answer.text
    await tab.login(kit)
    await tab.open("Dario Grigi")
    page = tab.page
    agent = kit.members["agent"]

    await page.locator("#assign-select").select_option(str(agent.id))
    row = tab.conversation("Dario Grigi")
    await expect(row.locator(".conversation-meta")).to_contain_text(agent.name)
    await page.get_by_role("button", name=IT["labels.button"]).click()
    await page.locator(".menu-item", has_text="Fatture").locator("input").check()
    await expect(page.locator(".thread-labels")).to_contain_text("Fatture")
    await page.keyboard.press("Escape")
    await expect(row.locator(".conversation-meta")).to_contain_text("Fatture")
    await page.locator("#ai-mode-select").select_option("off")  # a human takes over from the AI
    await expect(page.locator("#ai-mode-select")).to_have_value("off")
    await tab.screenshot(output, "assigned.png")

    await page.locator("#resolve-button").click()
    await expect(page.locator(".thread")).to_have_attribute("data-status", "resolved")
    await expect(row).to_have_count(0)  # the list shows open conversations
    await page.locator("#filter-status").select_option("resolved")
    await expect(tab.conversation("Dario Grigi")).to_be_visible()
    async with kit.http("agent") as http:  # the assignee sees it as theirs
        mine = await http.get("/api/conversations", params={"scope": "mine", "status": "resolved"})
        assert [c["contact"]["name"] for c in mine.json()["items"]] == ["Dario Grigi"], mine.text
        assert mine.json()["items"][0]["ai_mode"] == "off"
    await tab.screenshot(output)
    tab.assert_clean()


async def test_mentions_notify_live_and_the_team_chats(gateway: Gateway, browser: Browser, tab: InboxPage,
                                                       output: Path) -> None:
    kit = await gateway.tenant()
    wa_id = new_wa_id()
    await inbound(kit, wa_id, "Il reso è arrivato?", "Franco Ocra")
    agent = kit.members["agent"]
    conversation_id = await kit.conversation_of(wa_id)
    async with kit.http("supervisor") as http:
        answer = await http.post(f"/api/conversations/{conversation_id}/assign", json={"assignee_id": str(agent.id)})
        assert answer.status_code == 200, answer.text
    colleague = await open_inbox(browser, gateway)
    try:
        await tab.login(kit)  # the supervisor
        await colleague.login(kit, role="agent")
        bell = colleague.page.locator("#notifications-toggle")
        await expect(bell.locator(".badge")).to_have_text("1")  # the assignment

        # the supervisor's note mentions the agent: the agent's bell rings without a reload
        await tab.open("Franco Ocra")
        page = tab.page
        await page.locator("#tab-note").click()
        await page.locator("#composer-input").fill(f"@{agent.email.split('@')[0]} puoi controllare il reso?")
        await page.locator("#send-button").click()
        await expect(bell.locator(".badge")).to_have_text("2", timeout=10_000)
        await expect(bell).to_have_attribute("aria-label", IT["notification.bellUnread.other"].replace("{n}", "2"))
        await bell.click()
        await colleague.page.locator(".notification.unread").first.click()
        await expect(colleague.page.locator("#thread-title")).to_have_text("Franco Ocra")
        await expect(colleague.page.locator("#timeline .note")).to_contain_text("puoi controllare il reso?")

        # team chat: a direct message, live on the other side
        await page.locator("#team-chat-toggle").click()
        await page.locator("#team-chat select").select_option(str(agent.id))
        await page.locator("#chat-input").fill("Ciao, ti ho scritto nella nota")
        await page.locator("#chat-input").press("Enter")
        await expect(page.locator("#team-chat .chat-line")).to_have_count(1)
        await colleague.page.locator("#team-chat-toggle").click()
        channel = colleague.page.locator("#team-chat .channel").first
        await expect(channel).to_be_visible(timeout=10_000)
        await channel.click()
        await expect(colleague.page.locator("#team-chat .chat-line")).to_contain_text("ti ho scritto nella nota")
        await page.locator("#chat-input").fill("Grazie!")
        await page.locator("#chat-input").press("Enter")
        await expect(colleague.page.locator("#team-chat .chat-line", has_text="Grazie!")).to_be_visible(timeout=10_000)
        await colleague.screenshot(output, "agent.png")
        await tab.screenshot(output)
        tab.assert_clean()
        colleague.assert_clean()
    finally:
        await colleague.context.close()
