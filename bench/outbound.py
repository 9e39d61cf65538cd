"""Outbound pacing: does the Dispatcher hold the configured send rate, measured at Meta's side?

An embedded PostgreSQL (in a temporary directory) and the Cloud API simulator are started; N text
messages are queued through the real transactional outbox (``engine.whatsapp.outbound``) to
~100 recipients over 2 phone numbers, interleaved as live traffic would be; one Dispatcher
sends them with a per-number token bucket of ``--rate`` msg/s and a per-recipient one. The
figures come from the simulator's ``accepted_at`` timestamps, not from our own counters:

* per phone number: sends in every sliding 1-second window (max, p50 over full windows), the
  overall rate, and the steady rate after the first second (the bucket starts full, so the
  first second may carry up to rate + burst);
* per (phone number, recipient) pair: the most sends in any 1-second window against the
  recipient bucket's rate + burst, and whether any pair ever sent faster than its bucket allows.

    .venv/bin/python bench/outbound.py                        # 80 msg/s, 2,000 messages
    .venv/bin/python bench/outbound.py --rate 20 --messages 500

Writes bench/results/outbound.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script, the repo root is not on sys.path
    sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.simulator import SendRecord, Simulator  # noqa: E402
from bench.report import git, machine, write_report  # noqa: E402
from engine import tenants  # noqa: E402
from engine.crypto import SecretBox  # noqa: E402
from engine.db import migrations  # noqa: E402
from engine.db.pool import connect, create_pool  # noqa: E402
from engine.embedded.credentials import Credentials  # noqa: E402
from engine.embedded.ports import free_port  # noqa: E402
from engine.embedded.postgres import EmbeddedPostgres  # noqa: E402
from engine.pacing import Pacer  # noqa: E402
from engine.retry import RetryStrategy  # noqa: E402
from engine.services import APP_DATABASE, APP_ROLE, bootstrap_embedded_database  # noqa: E402
from engine.whatsapp import channels, outbound  # noqa: E402
from engine.whatsapp.channels import ChannelRoute  # noqa: E402
from engine.whatsapp.dispatcher import Dispatcher  # noqa: E402
from engine.whatsapp.graph import GraphClient  # noqa: E402
from engine.whatsapp.webhook import RouteCache  # noqa: E402

RESULTS = REPO / "bench" / "results"
PHONES = (("106540352242922", "EAAG-bench-token-1", "102290129340398"),
          ("106540352242923", "EAAG-bench-token-2", "102290129340399"))
WINDOW_S = 1.0
# Windows are measured where Meta would see them, after the HTTP hop: a send granted at the end of
# one pacer second can land a few ms later than its neighbours. 20 ms of that jitter is allowed.
JITTER_S = 0.02
# A pair's first send may sit in the initial burst, where the HTTP hop is slowest (tens of ms):
# its first-to-last span at the simulator can look that much shorter than the bucket's floor.
SPAN_JITTER_S = 0.1
console = Console()


class BenchError(Exception):
    """A step of the benchmark failed; the message is shown as is."""


# --- services ------------------------------------------------------------------------------------

@asynccontextmanager
async def embedded_database(root: Path) -> AsyncIterator[str]:
    """A migrated PostgreSQL of its own under ``root`` (the pattern of tests/conftest.py)."""
    server = EmbeddedPostgres(root / "data", free_port(), root / "postgres.log")
    creds = Credentials.generate()
    server.init(creds.postgres_superuser)
    server.start()
    try:
        await bootstrap_embedded_database(server, creds)
        url = f"postgresql://{APP_ROLE}:{creds.postgres_app}@127.0.0.1:{server.port}/{APP_DATABASE}"
        conn = await connect(url)
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()
        yield url
    finally:
        server.stop()


# --- measurement ---------------------------------------------------------------------------------

def window_counts(times: Sequence[float], width: float = WINDOW_S) -> tuple[list[int], list[int]]:
    """Sends in [t, t + width) for each send t (sorted times): (all windows, full windows only).

    The busiest window of any placement starts at a send, so the max over these is the true max;
    "full" drops the windows that run past the last send, which would understate the median.
    """
    counts, full = [], []
    j = 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + width:
            j += 1
        counts.append(j - i)
        if t + width <= times[-1]:
            full.append(j - i)
    return counts, full


def rate_between(times: Sequence[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


@dataclass(frozen=True)
class NumberFigures:
    phone_number_id: str
    sends: int
    window_max: int
    window_p50: float
    rate_overall: float
    rate_after_first_s: float
    windows_over_rate: int  # 1-s windows that carried more than the configured rate
    limit: float  # rate + burst
    jitter_allowance: int  # sends that JITTER_S of transit jitter can add to a window

    @property
    def verdict(self) -> str:
        if self.window_max <= self.limit:
            return "held"
        return "held within jitter" if self.window_max <= self.limit + self.jitter_allowance else "EXCEEDED"


@dataclass(frozen=True)
class RecipientFigures:
    pairs: int
    sends_per_pair: float
    window_max: int
    limit: float  # per-recipient rate + burst
    pairs_over_limit: int
    span_p50_s: float  # first to last send of one pair
    span_min_s: float
    span_floor_s: float  # the shortest span the bucket allows for that many sends

    @property
    def verdict(self) -> str:
        if self.pairs_over_limit or self.span_min_s < self.span_floor_s - SPAN_JITTER_S:
            return "EXCEEDED"
        return "held" if self.span_min_s >= self.span_floor_s else "held within jitter"


def number_figures(pnid: str, times: list[float], rate: float, burst: float) -> NumberFigures:
    counts, full = window_counts(times)
    steady = [t for t in times if t >= times[0] + WINDOW_S]
    return NumberFigures(pnid, len(times), max(counts), float(statistics.median(full or counts)), rate_between(times),
                         rate_between(steady), sum(1 for c in counts if c > rate), rate + burst,
                         math.ceil(rate * JITTER_S))


def recipient_figures(sends: list[SendRecord], rate: float, burst: float) -> RecipientFigures:
    by_pair: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in sends:
        by_pair[(s.phone_number_id, s.wa_id)].append(s.accepted_at)
    limit = rate * WINDOW_S + burst
    maxima = [max(window_counts(sorted(times))[0]) for times in by_pair.values()]
    spans = [max(times) - min(times) for times in by_pair.values()]
    per_pair = statistics.mean(len(t) for t in by_pair.values())
    floor = max(0.0, (min(len(t) for t in by_pair.values()) - burst) / rate)
    return RecipientFigures(len(by_pair), per_pair, max(maxima), limit, sum(1 for m in maxima if m > limit),
                            statistics.median(spans), min(spans), floor)


# --- the run -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    rate: float
    messages: int
    recipients: int
    per_recipient_rate: float
    recipient_burst: int
    latency_ms: float
    batch_size: int
    concurrency: int
    hot_recipients: int
    hot_messages: int


def _hot_pairs(cfg: Config) -> list[tuple[str, str]]:
    return [(f"39377{h:07d}", PHONES[0][0]) for h in range(cfg.hot_recipients)]


async def _setup(conn: asyncpg.Connection, box: SecretBox, sim: Simulator,
                 cfg: Config) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A tenant with both numbers, and a conversation per (number, recipient) whose window is open."""
    tenant = await tenants.create(conn, "Bench")
    for pnid, token, waba in PHONES:
        sim.register_phone(pnid, token, waba)
        await channels.add(conn, box, tenant.id, phone_number_id=pnid, waba_id=waba, app_secret="bench-secret",
                           verify_token=f"verify-{pnid}", access_token=token)
    conversations = []
    for r in range(cfg.recipients):
        for pnid, _, _ in PHONES:
            conversations.append(await outbound.conversation_with(conn, tenant.id, f"39333{r:07d}", pnid))
    hot = [await outbound.conversation_with(conn, tenant.id, wa_id, pnid) for wa_id, pnid in _hot_pairs(cfg)]
    await conn.execute("UPDATE conversations SET last_inbound_at = now()")  # every customer wrote just now
    # interleaved as live traffic would be: consecutive messages go to different numbers and recipients;
    # the hot recipients' messages come in a cluster within the first tenth of the stream (a small
    # campaign), so that their bucket binds while the bulk keeps flowing
    order = [conversations[i % len(conversations)] for i in range(cfg.messages)]
    hot_total = len(hot) * cfg.hot_messages
    span = max(hot_total, len(order) // 10)
    for k in range(hot_total):
        order.insert(round(k * span / hot_total) + k, hot[k % len(hot)])
    return tenant.id, order


async def run(cfg: Config) -> dict[str, Any]:
    box = SecretBox(Fernet.generate_key().decode())
    with tempfile.TemporaryDirectory(prefix="parlo-bench-outbound-") as tmp, Simulator(seed=1) as sim:
        sim.set_latency(cfg.latency_ms / 1000)
        console.print("starting embedded PostgreSQL …")
        async with embedded_database(Path(tmp)) as url:
            pool = await create_pool(url, min_size=2, max_size=20)
            try:
                return await _measure(cfg, pool, box, sim)
            finally:
                await pool.close()


async def _measure(cfg: Config, pool: asyncpg.Pool, box: SecretBox, sim: Simulator) -> dict[str, Any]:
    async with pool.acquire() as conn:
        tenant_id, order = await _setup(conn, box, sim, cfg)
        started = time.monotonic()
        with _progress() as progress:
            task = progress.add_task("queueing", total=len(order))
            for i, conversation_id in enumerate(order):
                await outbound.queue_text(conn, tenant_id, conversation_id, f"bench {i}")
                progress.advance(task)
        queue_s = time.monotonic() - started

    clients: dict[uuid.UUID, GraphClient] = {}

    def graph_for(route: ChannelRoute) -> GraphClient:
        client = clients.get(route.channel_id)
        if client is None:
            client = clients[route.channel_id] = GraphClient(route.access_token, base_url=sim.base_url,
                                                             api_version=sim.api_version)
        return client

    dispatcher = Dispatcher(pool, RouteCache(pool, box), graph_for,
                            pacer=Pacer(cfg.rate, cfg.per_recipient_rate, cfg.recipient_burst),
                            retry=RetryStrategy(), batch_size=cfg.batch_size, concurrency=cfg.concurrency)
    stop = asyncio.Event()
    loop = asyncio.create_task(dispatcher.run(stop, idle_poll_s=0.5))
    started = time.monotonic()
    try:
        with _progress() as progress:
            task = progress.add_task("sending", total=len(order))
            while (done := await pool.fetchval("SELECT count(*) FROM outbox WHERE state = 'done'")) < len(order):
                progress.update(task, completed=len(sim.sent))
                if loop.done():
                    raise BenchError(f"the dispatcher loop stopped: {loop.exception()!r}")
                if time.monotonic() - started > 60 + 5 * len(order) / cfg.rate:
                    raise BenchError(f"only {done} of {len(order)} messages were sent in time")
                await asyncio.sleep(0.1)
            progress.update(task, completed=len(sim.sent))
        send_s = time.monotonic() - started
    finally:
        stop.set()
        dispatcher.wake()
        await loop
        for client in clients.values():
            await client.aclose()
    return _report(cfg, sim, dispatcher, queue_s, send_s)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _report(cfg: Config, sim: Simulator, dispatcher: Dispatcher, queue_s: float, send_s: float) -> dict[str, Any]:
    sends = sim.sent
    per_number = [number_figures(pnid, [s.accepted_at for s in sends if s.phone_number_id == pnid],
                                 cfg.rate, dispatcher.pacer.number_burst)
                  for pnid, _, _ in PHONES]
    hot = {wa_id for wa_id, _ in _hot_pairs(cfg)}
    recipients = {"bulk": recipient_figures([s for s in sends if s.wa_id not in hot], cfg.per_recipient_rate,
                                            cfg.recipient_burst)}
    if hot:
        recipients["hot"] = recipient_figures([s for s in sends if s.wa_id in hot], cfg.per_recipient_rate,
                                              cfg.recipient_burst)
    times = [s.accepted_at for s in sends]
    per_text = Counter(s.text for s in sends)
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
        "machine": machine(),
        "config": asdict(cfg),
        "queued_in_s": round(queue_s, 2),
        "sent_in_s": round(send_s, 2),
        "sends": len(sends),
        "duplicates": sum(n - 1 for n in per_text.values() if n > 1),
        "lost": cfg.messages + cfg.hot_recipients * cfg.hot_messages - len(per_text),
        "rejected_by_meta": len(sim.failed_attempts),
        "dispatcher": {"sent": dispatcher.sent, "retried": dispatcher.retried, "failed": dispatcher.failed},
        "overall_rate": round(rate_between(times), 2),
        "configured_total_rate": cfg.rate * len(PHONES),
        "per_number": [{**asdict(n), "rate_overall": round(n.rate_overall, 2),
                        "rate_after_first_s": round(n.rate_after_first_s, 2), "verdict": n.verdict} for n in per_number],
        "per_recipient": {name: _pairs_json(figures) for name, figures in recipients.items()},
        "pacing_held": all(f.verdict != "EXCEEDED" for f in [*per_number, *recipients.values()]),
    }


# --- output --------------------------------------------------------------------------------------

def _pairs_json(f: RecipientFigures) -> dict[str, Any]:
    return {**asdict(f), "sends_per_pair": round(f.sends_per_pair, 2), "span_p50_s": round(f.span_p50_s, 2),
            "span_min_s": round(f.span_min_s, 2), "span_floor_s": round(f.span_floor_s, 2), "verdict": f.verdict}


PAIR_COLUMNS = ("traffic", "pairs", "sends/pair", "max 1-s window", "limit (rate+burst)", "pairs over", "span p50 s",
                "span min s", "span floor s", "")


def _pair_cells(name: str, p: dict[str, Any]) -> list[str]:
    return [name, str(p["pairs"]), f"{p['sends_per_pair']:g}", str(p["window_max"]), f"{p['limit']:g}",
            str(p["pairs_over_limit"]), f"{p['span_p50_s']:.2f}", f"{p['span_min_s']:.2f}", f"{p['span_floor_s']:.2f}",
            p["verdict"]]


def print_report(r: dict[str, Any]) -> None:
    cfg = r["config"]
    table = Table(title=f"Outbound pacing at the simulator: {r['sends']} sends, {cfg['rate']:g} msg/s per number")
    for col, justify in (("phone number", "left"), ("sends", "right"), ("max 1-s window", "right"),
                         ("p50 1-s window", "right"), ("rate overall", "right"), ("rate after 1st s", "right"),
                         ("windows > rate", "right"), ("limit (rate+burst)", "right"), ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for n in r["per_number"]:
        table.add_row(n["phone_number_id"], str(n["sends"]), str(n["window_max"]), f"{n['window_p50']:g}",
                      f"{n['rate_overall']:.1f}", f"{n['rate_after_first_s']:.1f}", str(n["windows_over_rate"]),
                      f"{n['limit']:g}", n["verdict"])
    console.print(table)
    pairs = Table(title="Per (number, recipient) pacing")
    for col in PAIR_COLUMNS:
        pairs.add_column(col, justify="left" if col in ("traffic", "") else "right")
    for name, p in r["per_recipient"].items():
        pairs.add_row(*_pair_cells(name, p))
    console.print(pairs)
    console.print(f"overall {r['overall_rate']:.1f} msg/s (configured {r['configured_total_rate']:g} over "
                  f"{len(r['per_number'])} numbers) · queued in {r['queued_in_s']:.1f} s · sent in {r['sent_in_s']:.1f} s"
                  f" · duplicates {r['duplicates']} · lost {r['lost']} · refused by Meta {r['rejected_by_meta']}")


def markdown(r: dict[str, Any]) -> str:
    cfg = r["config"]
    lines = [
        "# Outbound pacing benchmark",
        "",
        f"{r['timestamp']} · revision `{r['git_revision']}`{' (dirty tree)' if r['git_dirty'] else ''} · "
        f"{r['machine']['cpus_logical']} CPUs · Python {r['machine']['python']}",
        "",
        f"{r['sends']} text messages through the transactional outbox to {cfg['recipients']} recipients on 2 numbers, "
        f"one Dispatcher (batch {cfg['batch_size']}, concurrency {cfg['concurrency']}), configured "
        f"{cfg['rate']:g} msg/s per number and {cfg['per_recipient_rate']:g} msg/s (burst {cfg['recipient_burst']}) "
        f"per recipient; simulator latency {cfg['latency_ms']:g} ms. Measured at the simulator (`accepted_at`).",
        "",
        "| phone number | sends | max 1-s window | p50 1-s window | rate overall | rate after 1st s | windows > rate "
        "| limit (rate + burst) | |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in r["per_number"]:
        lines.append(f"| {n['phone_number_id']} | {n['sends']} | {n['window_max']} | {n['window_p50']:g} | "
                     f"{n['rate_overall']:.1f} | {n['rate_after_first_s']:.1f} | {n['windows_over_rate']} | "
                     f"{n['limit']:g} | {n['verdict']} |")
    lines += ["", "| " + " | ".join(PAIR_COLUMNS) + " |", "|---|" + "---:|" * (len(PAIR_COLUMNS) - 2) + "---|"]
    lines += ["| " + " | ".join(_pair_cells(name, p)) + " |" for name, p in r["per_recipient"].items()]
    lines += [
        "",
        f"Overall {r['overall_rate']:.1f} msg/s against {r['configured_total_rate']:g} configured over both numbers; "
        f"queued in {r['queued_in_s']:.1f} s, sent in {r['sent_in_s']:.1f} s; duplicates {r['duplicates']}, "
        f"lost {r['lost']}; "
        f"sends refused by Meta {r['rejected_by_meta']}.",
        "",
        "The number bucket holds 25 ms of tokens (burst = rate / 40) and starts full, so a second "
        "may carry up to rate + burst; \"rate after 1st s\" is the steady rate. \"Span floor\" is the shortest time "
        "the recipient bucket allows between a pair's first and last send. \"hot\" pairs are the few recipients "
        f"that get {cfg['hot_messages']} messages each on the first number, clustered in the first tenth of the "
        "bulk stream, so that the recipient bucket binds; \"held within jitter\" means at most "
        f"{JITTER_S * 1000:g} ms of HTTP transit jitter worth of sends above a number's bound, or a pair's span "
        f"at most {SPAN_JITTER_S * 1000:g} ms under its floor (the buckets are exact at the pacer; the simulator "
        "sees them after the HTTP hop).",
        "",
        "Regenerate with `.venv/bin/python bench/outbound.py`.",
        "",
    ]
    return "\n".join(lines)


def write_results(report: dict[str, Any]) -> list[Path]:
    return write_report("outbound", report, markdown(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=80.0, help="sends per second per phone number (default 80)")
    parser.add_argument("--messages", type=int, default=2000, help="messages to queue (default 2000)")
    parser.add_argument("--recipients", type=int, default=100, help="distinct customers (default 100)")
    parser.add_argument("--per-recipient-rate", type=float, default=1.0, help="sends per second per recipient (default 1)")
    parser.add_argument("--recipient-burst", type=int, default=5, help="per-recipient bucket size (default 5)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulated Graph API latency (default 0)")
    parser.add_argument("--hot-recipients", type=int, default=3, help="recipients that get many messages (default 3)")
    parser.add_argument("--hot-messages", type=int, default=15, help="messages to each hot recipient (default 15)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.messages < 2 or args.recipients < 1 or args.per_recipient_rate <= 0:
        parser.error("need --rate > 0, --messages >= 2, --recipients >= 1 and --per-recipient-rate > 0")
    cfg = Config(args.rate, args.messages, args.recipients, args.per_recipient_rate, args.recipient_burst,
                 args.latency_ms, args.batch_size, args.concurrency, args.hot_recipients, args.hot_messages)
    try:
        report = asyncio.run(run(cfg))
    except BenchError as exc:
        console.print(f"[red]bench: {exc}[/]", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("[red]bench: interrupted[/]")
        return 130
    print_report(report)
    for path in write_results(report):
        console.print(f"wrote {path.relative_to(REPO)}")
    return 0 if report["pacing_held"] else 1


if __name__ == "__main__":
    sys.exit(main())
