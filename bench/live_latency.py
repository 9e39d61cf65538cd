"""Live event latency: from a signed webhook posted to the Gateway to the `message.created` frame
on every connected agent's WebSocket.

A fresh engine (``parlo up`` in a temporary home, as bench/webhook_ingest.py does) gets a tenant,
a WhatsApp number and N supervisors (who may see every conversation, so each must get each event).
Two child processes share the work so that neither measures the other's stalls: one holds the N
sockets and timestamps every frame, the other posts signed deliveries at a fixed rate, each text
carrying its sequence number and send time. Latency = frame received − delivery sent (same clock).
The stream id's timestamp (Redis's clock at XADD) splits it into webhook→publish and publish→socket.

    .venv/bin/python bench/live_latency.py                         # 50 sockets, 200/s, 30 s
    .venv/bin/python bench/live_latency.py --sockets 20 --rate 100 --seconds 10

Writes bench/results/live_latency.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.report import git, machine, write_report  # noqa: E402
from bench.simulator import payloads  # noqa: E402
from bench.simulator.webhooks import encode, sign  # noqa: E402
from bench.startup import UP_TIMEOUT_S, BenchError, Engine, running_engine  # noqa: E402

APP_SECRET = "bench-app-secret"
PNID, WABA = "106540352242933", "102290129340311"
AIM_P99_MS = 100.0
console = Console()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


# --- the sockets (a child process) -------------------------------------------------------------

async def _listen(ws_base: str, tokens: list[str], expected: int, ready_file: Path, deadline_s: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    received: list[dict[str, int]] = [{} for _ in tokens]  # per socket: seq → count
    latencies: list[float] = []
    publish_to_socket: list[float] = []
    closes: list[str] = []
    done = asyncio.Event()
    complete = [0]

    async def one(index: int, token: str, ready: asyncio.Event) -> None:
        """One agent's socket, resuming from its last event id after any close, as the inbox does."""
        seen = received[index]
        last_id: str | None = None
        while True:
            url = f"{ws_base}/ws?token={token}" + (f"&last_id={last_id}" if last_id else "")
            try:
                async with connect(url, open_timeout=60, max_size=2**22) as ws:
                    hello = json.loads(await ws.recv())
                    assert hello["type"] == "hello", hello
                    last_id = last_id or hello["last_id"]
                    ready.set()
                    async for raw in ws:
                        now = time.time()
                        frame = json.loads(raw)
                        if frame.get("type") == "resync":
                            closes.append("resync")
                        if "id" in frame:
                            last_id = frame["id"]
                        if frame.get("type") != "message.created":
                            continue
                        tag, seq, sent = frame["data"]["text"].split(" ")
                        if tag != "lat":
                            continue
                        seen[seq] = seen.get(seq, 0) + 1
                        latencies.append((now - float(sent)) * 1000)
                        publish_to_socket.append(now * 1000 - int(frame["id"].split("-")[0]))
                        if len(seen) == expected:
                            complete[0] += 1
                            if complete[0] == len(tokens):
                                done.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a close is a finding: note it and resume
                closes.append(f"{type(exc).__name__}: {exc}"[:160])
                await asyncio.sleep(0.2)

    readies = [asyncio.Event() for _ in tokens]
    tasks = [asyncio.create_task(one(i, t, r)) for i, (t, r) in enumerate(zip(tokens, readies))]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
    ready_file.write_text("ready")
    try:
        await asyncio.wait_for(done.wait(), deadline_s)
    except asyncio.TimeoutError:
        pass
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    got = sum(len(seen) for seen in received)
    duplicates = sum(count - 1 for seen in received for count in seen.values() if count > 1)
    return {"sockets": len(tokens), "expected": expected * len(tokens), "received": got,
            "lost": expected * len(tokens) - got, "duplicates": duplicates,
            "sockets_complete": sum(1 for seen in received if len(seen) == expected),
            "reconnects": len(closes), "closes": sorted(set(closes))[:5],
            "latency_ms": _summary(latencies), "publish_to_socket_ms": _summary(publish_to_socket)}


def _summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 0.50), "p95": percentile(values, 0.95),
            "p99": percentile(values, 0.99), "max": max(values) if values else float("nan")}


# --- the deliveries (a child process) ----------------------------------------------------------

async def _post(url: str, rate: float, seconds: float, contacts: int, tag: str) -> dict[str, Any]:
    import aiohttp

    n = int(rate * seconds)
    statuses: dict[int, int] = {}
    ack: list[float] = []
    pending: set[asyncio.Task[None]] = set()
    limit = asyncio.Semaphore(128)

    async def send(session: aiohttp.ClientSession, i: int) -> None:
        async with limit:
            sent = time.time()
            message = payloads.text_message(f"39333{i % contacts:07d}", f"{tag} {i} {sent:.6f}",
                                            wamid=f"wamid.lat.{uuid.uuid4().hex}")
            body = encode(payloads.inbound(message, waba_id=WABA, phone_number_id=PNID,
                                           display_phone_number="15550002222", profile_name=f"Cliente {i % contacts}"))
            async with session.post(url, data=body, headers={"content-type": "application/json",
                                                             "x-hub-signature-256": sign(body, APP_SECRET)}) as answer:
                await answer.read()
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
            ack.append((time.time() - sent) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128)) as session:
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(send(session, i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - start
    return {"sent": n, "elapsed_s": elapsed, "rate": n / elapsed, "statuses": statuses, "ack_ms": _summary(ack)}


# --- setup and the run -------------------------------------------------------------------------

def prepare(engine: Engine, sockets: int) -> list[str]:
    """N supervisors of the tenant ``bench`` and an access token for each (no login: the login
    limits per address would rightly refuse 50 logins a second from one machine)."""
    import asyncpg

    from engine import users
    from engine.auth.tokens import TokenKeys, issue_access
    from engine.services import database_url

    async def run() -> list[str]:
        conn = await asyncpg.connect(database_url(engine.settings))
        try:
            tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE slug = 'bench'")
            made = [await users.create(conn, tenant_id, f"sup{i}@bench.test", f"Supervisor {i}",
                                       "una password lunga e sicura", role="supervisor") for i in range(sockets)]
        finally:
            await conn.close()
        keys = TokenKeys.from_settings(engine.settings)
        return [issue_access(keys, user)[0] for user in made]

    return asyncio.run(run())


def child(args: list[str], work: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=work)


def finish(proc: subprocess.Popen[str], what: str, timeout_s: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout_s)
    if proc.returncode != 0:
        raise BenchError(f"{what} failed: {err[-2000:]}")
    return json.loads(out)


def bench(sockets: int, rate: float, seconds: float, replicas: int, contacts: int) -> dict[str, Any]:
    with running_engine(keep=False) as engine:
        engine.env["PARLO_GATEWAY_REPLICAS"] = str(replicas)
        with console.status("starting the engine…"):
            engine.parlo("up", UP_TIMEOUT_S)
            engine.parlo("tenant", 60, "create", "bench")
            engine.parlo("channel", 60, "add", "--tenant", "bench", "--phone-number-id", PNID, "--waba-id", WABA,
                         "--app-secret", APP_SECRET, "--verify-token", "bench-verify", "--access-token", "bench-token")
            tokens = prepare(engine, sockets)
        base = f"http://127.0.0.1:{engine.settings.http_port}"
        tokens_file, ready_file = engine.home / "tokens.json", engine.home / "sockets.ready"
        tokens_file.write_text(json.dumps(tokens))
        # warm-up: the channel routes, the pools and the conversations exist before the measured run
        with console.status("warming up…"):
            finish(child(["post", "--url", f"{base}/webhooks/whatsapp", "--rate", "100", "--seconds", "3",
                          "--contacts", str(contacts), "--tag", "warm"], engine.home), "warm-up", 120)
        n = int(rate * seconds)
        listener = child(["listen", "--ws", base.replace("http", "ws"), "--tokens", str(tokens_file),
                          "--expected", str(n), "--ready", str(ready_file), "--deadline", str(seconds + 60)],
                         engine.home)
        with console.status(f"connecting {sockets} sockets…"):
            deadline = time.monotonic() + 150
            while not ready_file.exists():
                if listener.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"the sockets did not connect: {listener.stderr.read()[-2000:] if listener.stderr else ''}")
                time.sleep(0.2)
        with console.status(f"{rate:g} webhooks/s for {seconds:g} s to {sockets} sockets…"):
            posted = finish(child(["post", "--url", f"{base}/webhooks/whatsapp", "--rate", str(rate), "--seconds",
                                   str(seconds), "--contacts", str(contacts)], engine.home), "poster", seconds + 300)
            heard = finish(listener, "listener", seconds + 180)
    return {"posted": posted, "heard": heard}


def report(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    posted, heard = results["posted"], results["heard"]
    lat, hop = heard["latency_ms"], heard["publish_to_socket_ms"]
    aims = {"p99": (f"<= {AIM_P99_MS:g} ms", lat["p99"] <= AIM_P99_MS),
            "no loss": ("every socket gets every event", heard["lost"] == 0 and heard["duplicates"] == 0)}
    table = Table("measure", "n", "p50 ms", "p95 ms", "p99 ms", "max ms")
    for name, s in (("webhook → socket", lat), ("publish (XADD) → socket", hop), ("webhook ack", posted["ack_ms"])):
        table.add_row(name, str(s["n"]), f"{s['p50']:.1f}", f"{s['p95']:.1f}", f"{s['p99']:.1f}", f"{s['max']:.1f}")
    console.print(table)
    console.print(f"posted {posted['sent']} at {posted['rate']:.0f}/s ({posted['statuses']}); events received "
                  f"{heard['received']}/{heard['expected']} (lost {heard['lost']}, duplicates {heard['duplicates']}, "
                  f"{heard['sockets_complete']}/{heard['sockets']} sockets complete, {heard['reconnects']} resumes)")
    for name, (limit, met) in aims.items():
        console.print(f"aim {name} {limit}: {'[green]met[/]' if met else '[red]not met[/]'}")
    full = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "revision": git("rev-parse", "HEAD"),
            "machine": machine(), "sockets": args.sockets, "rate": args.rate, "seconds": args.seconds,
            "gateway_replicas": args.replicas, **results,
            "aims": {k: {"limit": v[0], "met": v[1]} for k, v in aims.items()}}
    lines = ["# Live event latency benchmark", "",
             f"{full['timestamp']} · revision `{full['revision']}` · {machine()['cpus_logical']} CPUs · "
             f"{args.sockets} supervisors' sockets · {args.rate:g} signed webhooks/s for {args.seconds:g} s · "
             f"{args.replicas} Gateway replicas", "",
             "| measure | n | p50 ms | p95 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in (("webhook → socket", lat), ("publish (XADD) → socket", hop), ("webhook ack", posted["ack_ms"])):
        lines.append(f"| {name} | {s['n']} | {s['p50']:.1f} | {s['p95']:.1f} | {s['p99']:.1f} | {s['max']:.1f} |")
    lines += ["", f"Posted {posted['sent']} at {posted['rate']:.0f}/s, answers {posted['statuses']}. Events received "
              f"{heard['received']} of {heard['expected']}: lost {heard['lost']}, duplicates {heard['duplicates']}, "
              f"{heard['sockets_complete']}/{heard['sockets']} sockets got every event.", ""]
    if heard["closes"]:
        lines += [f"Sockets closed by the server and resumed from their last id {heard['reconnects']} times: "
                  + "; ".join(heard["closes"]), ""]
    lines += [f"- aim {k} {v[0]}: {'met' if v[1] else 'not met'}" for k, v in aims.items()]
    lines += ["", "webhook → publish is the Gateway's batching of shard updates and events after commit "
              "(`Gateway._flush`, 100 ms linger); publish → socket is the live hub and the Serve proxy.", "",
              "Regenerate with `.venv/bin/python bench/live_latency.py`."]
    write_report("live_latency", full, "\n".join(lines) + "\n")
    return full


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    listen = sub.add_parser("listen")
    listen.add_argument("--ws", required=True)
    listen.add_argument("--tokens", type=Path, required=True)
    listen.add_argument("--expected", type=int, required=True)
    listen.add_argument("--ready", type=Path, required=True)
    listen.add_argument("--deadline", type=float, required=True)
    post = sub.add_parser("post")
    post.add_argument("--url", required=True)
    post.add_argument("--rate", type=float, required=True)
    post.add_argument("--seconds", type=float, required=True)
    post.add_argument("--contacts", type=int, default=200)
    post.add_argument("--tag", default="lat")
    parser.add_argument("--sockets", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--replicas", type=int, default=2, help="Gateway replicas (PARLO_GATEWAY_REPLICAS)")
    parser.add_argument("--contacts", type=int, default=200, help="distinct customers writing")
    args = parser.parse_args(argv)
    if args.mode == "listen":
        tokens = json.loads(args.tokens.read_text())
        print(json.dumps(asyncio.run(_listen(args.ws, tokens, args.expected, args.ready, args.deadline))))
        return 0
    if args.mode == "post":
        print(json.dumps(asyncio.run(_post(args.url, args.rate, args.seconds, args.contacts, args.tag))))
        return 0
    try:
        results = bench(args.sockets, args.rate, args.seconds, args.replicas, args.contacts)
    except BenchError as exc:
        console.print(f"[red]benchmark failed:[/] {exc}", highlight=False)
        return 1
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
