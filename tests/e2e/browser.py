"""Helpers for the web inbox's browser tests: Debian's Chromium driven by Playwright (async API).

A page records its console errors, uncaught exceptions and dialogs (an ``alert`` from injected
script would land there), so a test can assert that the page ran clean.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.api_harness import PASSWORD

if TYPE_CHECKING:
    from tests.api_harness import Gateway, TenantKit

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
I18N = Path(__file__).resolve().parents[2] / "web" / "i18n"
LIVE_TIMEOUT_MS = 15_000


def strings(lang: str) -> dict[str, str]:
    return json.loads((I18N / f"{lang}.json").read_text(encoding="utf-8"))


@dataclass
class InboxPage:
    """One signed-in (or signing-in) browser tab on the inbox."""

    context: BrowserContext
    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    async def login(self, kit: TenantKit, role: str = "supervisor") -> None:
        await self.page.goto(f"{self.base_url}/")
        await self.fill_login(kit.slug, kit.members[role].email, PASSWORD)
        await self.page.locator("button[type=submit]").click()
        await self.wait_live()

    async def fill_login(self, tenant: str, email: str, password: str) -> None:
        await self.page.locator("input[name=tenant]").fill(tenant)
        await self.page.locator("input[name=email]").fill(email)
        await self.page.locator("input[name=password]").fill(password)

    async def wait_live(self) -> None:
        await expect(self.page.locator("#connection")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT_MS)

    def conversation(self, name: str) -> Any:
        return self.page.locator(".conversation", has_text=name)

    async def open(self, name: str) -> None:
        await self.conversation(name).click()
        await expect(self.page.locator("#thread-title")).to_have_text(name)

    def message(self, text: str) -> Any:
        return self.page.locator("#timeline .message", has_text=text)

    async def reply(self, text: str) -> None:
        box = self.page.locator("#composer-input")
        await box.fill(text)
        await box.press("Enter")

    async def screenshot(self, output: Path, name: str = "screenshot.png") -> Path:
        path = output / name
        await self.page.screenshot(path=str(path), full_page=False)
        return path

    def assert_clean(self, allow: tuple[str, ...] = ()) -> None:
        """No uncaught exception, no console error (a CSP violation is one), no dialog."""
        unexpected = [e for e in self.errors if not any(re.search(a, e) for a in allow)]
        assert not unexpected, unexpected
        assert not self.dialogs, self.dialogs


async def open_inbox(browser: Browser, gateway: Gateway, viewport: dict[str, int] = DESKTOP) -> InboxPage:
    context = await browser.new_context(viewport=viewport, locale="it-IT")
    page = await context.new_page()
    inbox = InboxPage(context, page, gateway.base_url)
    page.on("pageerror", lambda exc: inbox.errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and inbox.errors.append(f"console: {msg.text}"))

    async def on_dialog(dialog: Any) -> None:
        inbox.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    return inbox


async def visible_strings(page: Page) -> list[str]:
    """Every text node a person can see, plus the accessible names and hints the page sets
    (aria-label, title, placeholder, alt) on visible elements."""
    return await page.evaluate(
        """() => {
          const out = [];
          const shown = (el) => {
            if (!el) return false;
            const style = getComputedStyle(el);
            if (style.display === 'none' || style.visibility === 'hidden') return false;
            return el.getClientRects().length > 0 || el.closest('.visually-hidden') !== null;
          };
          const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
          for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            const text = node.textContent.trim();
            if (text && shown(node.parentElement) && !node.parentElement.closest('script, style')) out.push(text);
          }
          for (const el of document.querySelectorAll('[aria-label], [title], [placeholder], [alt]')) {
            if (!shown(el)) continue;
            for (const attr of ['aria-label', 'title', 'placeholder', 'alt']) {
              const value = el.getAttribute(attr);
              if (value && value.trim()) out.push(value.trim());
            }
          }
          for (const option of document.querySelectorAll('option')) out.push(option.textContent.trim());
          out.push(document.title);
          return out;
        }"""
    )


def italian_leftovers(texts: list[str]) -> list[str]:
    """The Italian strings (those that differ from their English translation) still on screen.
    A string with placeholders matches as a pattern; only whole strings count, so "Note" inside
    "Notes" is not a false alarm."""
    it, en = strings("it"), strings("en")
    patterns = []
    for key, value in it.items():
        if en.get(key) == value:
            continue
        parts = re.split(r"\{\w+\}", value)
        patterns.append((key, re.compile("^" + ".*?".join(re.escape(p) for p in parts) + "$", re.S)))
    return [f"{key}: {text!r}" for text in texts for key, pattern in patterns if pattern.match(text)]
