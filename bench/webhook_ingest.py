"""Webhook ingest throughput and ack latency: the Ray Serve Gateway against a bare baseline.

Both sides run the same engine code (signature check, parse, one PostgreSQL transaction per
delivery: :class:`engine.whatsapp.webhook.WebhookReceiver`) against the same embedded
PostgreSQL; the baseline serves it from a single uvicorn process without Ray, so the ratio is
the price of the Serve path (proxy, router, replica hop). The load comes from a separate
process (aiohttp, fixed concurrency) posting pre-signed deliveries, each a text message with a
fresh wamid, and every stored row is counted afterwards.

    .venv/bin/python bench/webhook_ingest.py                  # 5,000 deliveries per side
    .venv/bin/python bench/webhook_ingest.py --n 20000 --concurrency 64

Writes bench/results/webhook_ingest.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.simulator import payloads  # noqa: E402
from bench.simulator.webhooks import encode, sign  # noqa: E402
from bench.report import git, machine, write_report  # noqa: E402
from bench.startup import UP_TIMEOUT_S, BenchError, Engine, running_engine, wait_quiet  # noqa: E402
from engine.embedded.ports import free_port  # noqa: E402

APP_SECRET = "bench-app-secret"
PNID, WABA = "106540352242922", "102290129340398"
AIM_RATE, AIM_P99_MS, AIM_RATIO = 1000.0, 100.0, 0.6
console = Console()


# --- the baseline server (a child process) -----------------------------------------------------

def serve_baseline(port: int) -> None:
    """uvicorn + asyncpg, no Ray: the same WebhookReceiver behind a bare Starlette route."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from engine.config import load_settings
    from engine.crypto import secret_box
    from engine.db.pool import create_pool
    from engine.services import database_url
    from engine.whatsapp.webhook import WebhookReceiver

    settings = load_settings()
    state: dict[str, WebhookReceiver] = {}
    # Ray runs its workers (the Serve replicas among them) at niceness 15; the baseline gets the
    # same, so that neither side is favoured over the load generator and PostgreSQL.
    os.nice(15 - os.nice(0))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        pool = await create_pool(database_url(settings), min_size=2, max_size=settings.db_pool_max)
        state["receiver"] = WebhookReceiver(pool, secret_box(settings), max_bytes=settings.webhook_max_bytes)
        yield
        await pool.close()

    async def webhook(request: Request) -> JSONResponse:
        outcome = await state["receiver"].receive(await request.body(), request.headers.get("x-hub-signature-256"))
        return JSONResponse({"status": outcome.detail}, status_code=outcome.status)

    app = Starlette(routes=[Route("/webhooks/whatsapp", webhook, methods=["POST"])], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the load generator (a child process) ------------------------------------------------------

async def _load(url: str, bodies_file: Path, concurrency: int) -> dict[str, Any]:
    import aiohttp

    deliveries = [json.loads(line) for line in bodies_file.read_text().splitlines()]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for d in deliveries:
        queue.put_nowait(d)

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                d = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = d["body"].encode()
            started = time.perf_counter()
            async with session.post(url, data=body, headers={"content-type": "application/json",
                                                              "x-hub-signature-256": d["sig"]}) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"n": len(deliveries), "elapsed_s": elapsed, "rate": len(deliveries) / elapsed,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
            "max_ms": latencies[-1] * 1000, "statuses": statuses}


PROCESS_GROUPS = (  # (label, marker in the command line), first match wins
    ("Gateway replicas", "ServeReplica:parlo:Gateway"), ("Assistant replica", "ServeReplica:parlo:Assistant"),
    ("ConversationShards", "ConversationShard"), ("OutboxDispatcher", "OutboxDispatcher"),
    ("KnowledgeShard", "KnowledgeShard"), ("baseline server", "webhook_ingest.py baseline"),
    ("load generator", "webhook_ingest.py load"), ("PostgreSQL", "postgres"), ("Redis", "redis-server"),
    ("HAProxy", "haproxy"), ("Ray (controller, raylet, GCS, agents)", "ray"),
)


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by every process, labelled by PROCESS_GROUPS."""
    import psutil

    out = {}
    for proc in psutil.process_iter(["cmdline", "name", "cpu_times"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [proc.info["name"] or ""])
            times = proc.info["cpu_times"]
        except (psutil.Error, TypeError):
            continue
        if times is None:
            continue
        label = next((name for name, marker in PROCESS_GROUPS if marker in cmdline), "other")
        out[proc.pid] = (label, times.user + times.system)
    return out


def cpu_per_delivery(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                     n: int) -> dict[str, float]:
    """Milliseconds of CPU per delivery, per group of processes, between two snapshots."""
    used: dict[str, float] = {}
    for pid, (label, seconds) in after.items():
        start = before.get(pid, (label, 0.0))[1]
        used[label] = used.get(label, 0.0) + max(0.0, seconds - start)
    return {label: round(1000 * s / n, 3) for label, s in sorted(used.items(), key=lambda kv: -kv[1]) if s > 0.005}


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load(url: str, bodies: list[dict[str, str]], concurrency: int, work: Path) -> dict[str, Any]:
    path = work / f"bodies-{uuid.uuid4().hex[:6]}.jsonl"
    path.write_text("\n".join(json.dumps(b) for b in bodies))
    result = subprocess.run([sys.executable, __file__, "load", "--url", url, "--bodies", str(path),
                             "--concurrency", str(concurrency)], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise BenchError(f"load generator failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


# --- deliveries ----------------------------------------------------------------------------------

def deliveries(n: int, tag: str, contacts: int = 500) -> list[dict[str, str]]:
    out = []
    for i in range(n):
        message = payloads.text_message(f"39333{i % contacts:07d}", f"messaggio {i} ({tag})",
                                        wamid=f"wamid.{tag}.{i:08d}")
        body = encode(payloads.inbound(message, waba_id=WABA, phone_number_id=PNID, display_phone_number="15550001111",
                                       profile_name=f"Cliente {i % contacts}"))
        out.append({"body": body.decode(), "sig": sign(body, APP_SECRET)})
    return out


# --- the run -------------------------------------------------------------------------------------

def count_messages(engine: Engine, tag: str) -> int:
    import asyncpg

    from engine.services import database_url

    async def count() -> int:
        conn = await asyncpg.connect(database_url(engine.settings))
        try:
            return int(await conn.fetchval("SELECT count(*) FROM messages WHERE wamid LIKE $1", f"wamid.{tag}.%"))
        finally:
            await conn.close()

    return asyncio.run(count())


def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.post(url, content=b"{}", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise BenchError(f"{url} never answered")


def summarize_profile(raw: Path, top: int = 12) -> list[tuple[float, str]]:
    """Share of active samples per innermost frame (idle waits left out) of a py-spy raw profile."""
    idle = ("Condition.wait", "select (", "epoll", "_worker (concurrent", "main_loop", "Thread.run", "wait (threading")
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frame = stack.split(";")[-1]
        if not n.isdigit() or any(marker in frame for marker in idle):
            continue
        total += int(n)
        counts[frame] = counts.get(frame, 0) + int(n)
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    return [(round(100 * c / max(total, 1), 1), frame) for frame, c in ranked]


def profile_replica(seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy (installed with Ray) on one Gateway replica for the measured run, if it can attach."""
    import psutil

    replica = next((p for p in psutil.process_iter(["cmdline"])
                    if "ServeReplica:parlo:Gateway" in " ".join(p.info["cmdline"] or [])), None)
    spy = Path(sys.executable).parent / "py-spy"
    if replica is None or not spy.exists():
        return None
    return subprocess.Popen([str(spy), "record", "-p", str(replica.pid), "-o", str(out), "-f", "raw",
                             "-d", str(int(seconds)), "-r", "200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bench(n: int, concurrency: int, warmup: int, replicas: int, profile: bool = False,
          group_commit: bool = True) -> dict[str, Any]:
    with running_engine(keep=False) as engine:
        engine.env["PARLO_GATEWAY_REPLICAS"] = str(replicas)
        engine.env["PARLO_WEBHOOK_GROUP_COMMIT"] = "true" if group_commit else "false"
        with console.status("starting the engine…"):
            engine.parlo("up", UP_TIMEOUT_S)
            engine.parlo("tenant", 60, "create", "bench")
            engine.parlo("channel", 60, "add", "--tenant", "bench", "--phone-number-id", PNID, "--waba-id", WABA,
                         "--app-secret", APP_SECRET, "--verify-token", "bench-verify", "--access-token", "bench-token")
        serve_url = f"http://127.0.0.1:{engine.settings.http_port}/webhooks/whatsapp"
        base_port = free_port()
        base_url = f"http://127.0.0.1:{base_port}/webhooks/whatsapp"
        baseline = subprocess.Popen([sys.executable, __file__, "baseline", "--port", str(base_port)],
                                    env=engine.env, cwd=engine.home)
        try:
            wait_http(base_url)
            results: dict[str, Any] = {}
            for side, url in (("serve", serve_url), ("baseline", base_url)):
                with console.status(f"{side}: warming up…"):
                    run_load(url, deliveries(warmup, f"{side}-warm"), concurrency, engine.home)
                    results.setdefault("quiet_wait_s", {})[side] = round(wait_quiet(), 1)
                with console.status(f"{side}: {n} deliveries at concurrency {concurrency}…"):
                    bodies = deliveries(n, side)
                    before, children = cpu_seconds(), _children_cpu_s()
                    results[side] = run_load(url, bodies, concurrency, engine.home)
                    cpu = cpu_per_delivery(before, cpu_seconds(), n)
                    # the load generator has exited by now: its CPU is in our children's rusage
                    cpu["load generator"] = round(1000 * (_children_cpu_s() - children) / n, 3)
                    results[side]["cpu_ms_per_delivery"] = cpu
                if profile and side == "serve":
                    # a separate run: the sampler's own cost must not lower the measured figures
                    spy = profile_replica(n / 500 + 2, engine.home / "replica.prof")
                    with console.status("serve: profiling a replica…"):
                        run_load(url, deliveries(n, "serve-profiled"), concurrency, engine.home)
                    if spy is not None:
                        spy.wait(120)
                        if (engine.home / "replica.prof").exists():
                            results["replica_profile"] = summarize_profile(engine.home / "replica.prof")
                results[side]["stored"] = count_messages(engine, side)
        finally:
            baseline.terminate()
            baseline.wait(10)
    results["ratio"] = results["serve"]["rate"] / results["baseline"]["rate"]
    return results


def report(results: dict[str, Any], n: int, concurrency: int) -> dict[str, Any]:
    serve = results["serve"]
    aims = {
        "rate": (f">= {AIM_RATE:g}/s", serve["rate"] >= AIM_RATE),
        "p99": (f"<= {AIM_P99_MS:g} ms", serve["p99_ms"] <= AIM_P99_MS),
        "ratio": (f">= {AIM_RATIO:g}x baseline", results["ratio"] >= AIM_RATIO),
    }
    table = Table("path", "deliveries/s", "p50 ms", "p99 ms", "max ms", "answers", "rows stored")
    for side in ("serve", "baseline"):
        r = results[side]
        table.add_row(side, f"{r['rate']:.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['max_ms']:.0f}",
                      ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())), f"{r['stored']}/{n}")
    console.print(table)
    console.print(f"Serve / baseline throughput: {results['ratio']:.2f}x")
    for side in ("serve", "baseline"):
        console.print(f"CPU ms per delivery, {side}: " + ", ".join(
            f"{label} {ms:.2f}" for label, ms in results[side]["cpu_ms_per_delivery"].items()), highlight=False)
    for share, frame in results.get("replica_profile", []):
        console.print(f"  {share:5.1f}%  {frame}", highlight=False)
    for name, (limit, met) in aims.items():
        console.print(f"aim {name} {limit}: {'[green]met[/]' if met else '[red]not met[/]'}")
    full = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "revision": git("rev-parse", "HEAD"),
            "machine": machine(), "deliveries": n, "concurrency": concurrency, **results,
            "aims": {k: {"limit": v[0], "met": v[1]} for k, v in aims.items()}}
    lines = ["# Webhook ingest benchmark", "",
             f"{full['timestamp']} · revision `{full['revision']}` · {machine()['cpus_logical']} CPUs · "
             f"{n} deliveries per path · concurrency {concurrency} · "
             f"{results.get('gateway_replicas', '?')} Gateway replicas · group commit "
             f"{'on' if results.get('group_commit', True) else 'off'}", "",
             "| path | deliveries/s | p50 ms | p99 ms | max ms | rows stored |", "|---|---:|---:|---:|---:|---:|"]
    for side in ("serve", "baseline"):
        r = results[side]
        lines.append(f"| {side} | {r['rate']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.0f} | "
                     f"{r['stored']}/{n} |")
    lines += ["", f"Serve / baseline: **{results['ratio']:.2f}x**", ""]
    lines += [f"- aim {k} {v[0]}: {'met' if v[1] else 'not met'}" for k, v in aims.items()]
    lines += ["", "Where the CPU goes (ms of CPU per delivery, each group of processes, during the measured run; "
              "the load generator's figure includes loading its bodies):", "",
              "| processes | serve | baseline |", "|---|---:|---:|"]
    labels = list(dict.fromkeys([*results["serve"]["cpu_ms_per_delivery"], *results["baseline"]["cpu_ms_per_delivery"]]))
    for label in labels:
        lines.append(f"| {label} | {results['serve']['cpu_ms_per_delivery'].get(label, 0):.2f} | "
                     f"{results['baseline']['cpu_ms_per_delivery'].get(label, 0):.2f} |")
    lines.append(f"| **total** | {sum(results['serve']['cpu_ms_per_delivery'].values()):.2f} | "
                 f"{sum(results['baseline']['cpu_ms_per_delivery'].values()):.2f} |")
    if results.get("replica_profile"):
        lines += ["", "Where one Gateway replica spends its active time (py-spy, innermost frames):", "",
                  "| share | frame |", "|---:|---|"]
        lines += [f"| {share}% | `{frame}` |" for share, frame in results["replica_profile"]]
    lines += ["", "Regenerate with `.venv/bin/python bench/webhook_ingest.py [--profile]`."]
    write_report("webhook_ingest", full, "\n".join(lines) + "\n")
    return full


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    b = sub.add_parser("baseline")
    b.add_argument("--port", type=int, required=True)
    ld = sub.add_parser("load")
    ld.add_argument("--url", required=True)
    ld.add_argument("--bodies", type=Path, required=True)
    ld.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--replicas", type=int, default=2, help="Gateway replicas (PARLO_GATEWAY_REPLICAS)")
    parser.add_argument("--profile", action="store_true", help="py-spy one Gateway replica during the Serve run")
    parser.add_argument("--no-group-commit", dest="group_commit", action="store_false",
                        help="each delivery in its own transaction, as the baseline does (PARLO_WEBHOOK_GROUP_COMMIT)")
    args = parser.parse_args(argv)
    if args.mode == "baseline":
        serve_baseline(args.port)
        return 0
    if args.mode == "load":
        print(json.dumps(asyncio.run(_load(args.url, args.bodies, args.concurrency))))
        return 0
    try:
        results = bench(args.n, args.concurrency, args.warmup, args.replicas, args.profile, args.group_commit)
    except BenchError as exc:
        console.print(f"[red]benchmark failed:[/] {exc}", highlight=False)
        return 1
    results["gateway_replicas"] = args.replicas
    results["group_commit"] = args.group_commit
    report(results, args.n, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
