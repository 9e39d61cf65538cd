"""Starting, finding and stopping the whole engine: embedded services, Ray, the Serve app."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from engine import tenants, users
from engine.config import Settings
from engine.db import migrations
from engine.db.pool import connect
from engine.embedded import credentials
from engine.embedded.ports import free_port, require_free_port
from engine.errors import Conflict, ServiceStartFailed, ServiceUnavailable
from engine.secrets import mask_url
from engine.services import bootstrap_embedded_database, database_url, embedded_postgres, embedded_redis, resolve

log = logging.getLogger("parlo.cli")

DEMO_TENANT = "demo"
DEMO_LOGIN_FILE = "demo-login.json"


@dataclass
class UpReport:
    started: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    migrations_applied: list[str] = field(default_factory=list)
    demo_created: bool = False
    demo_login: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def noop(self) -> bool:
        return not self.started and not self.migrations_applied and not self.demo_created


Step = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# --- Ray -------------------------------------------------------------------------------------

def ray_temp_dir(settings: Settings) -> Path:
    """Ray's socket paths must stay short (AF_UNIX limit), so its temp dir lives in /tmp, one per home."""
    digest = hashlib.sha256(str(settings.home).encode()).hexdigest()[:10]
    return Path("/tmp") / f"parlo-ray-{digest}"


def ray_address(settings: Settings) -> str:
    return settings.ray_address or f"127.0.0.1:{settings.ray_port}"


def ray_processes(settings: Settings) -> list[psutil.Process]:
    """The processes of the Ray instance we started for this home: matched by its temp dir, and
    the Ray client server, which `ray start` detaches without it, by the GCS port it serves."""
    marker = str(ray_temp_dir(settings))
    gcs_port = f":{settings.ray_port}"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
        except psutil.Error:
            continue
        if proc.pid == os.getpid():
            continue
        if any(marker in part for part in cmdline) or (
                "ray.util.client.server" in cmdline
                and any(part.startswith("--address=") and part.endswith(gcs_port) for part in cmdline)):
            found.append(proc)
    return found


def _gcs_answers(settings: Settings) -> bool:
    host, _, port = ray_address(settings).rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


def ray_running(settings: Settings) -> bool:
    if not settings.embedded_ray:
        return _gcs_answers(settings)
    return any("gcs_server" in " ".join(p.cmdline()) for p in ray_processes(settings) if p.is_running()) and _gcs_answers(settings)


def ray_env(settings: Settings) -> dict[str, str]:
    """The Ray environment of our processes: the Serve ingress choice and, for our local head, a
    token of its own (kept with the other generated credentials).

    Ray's GCS listens beyond loopback, so the token is what keeps other local users out; an
    external cluster (PARLO_RAY_ADDRESS) uses whatever RAY_AUTH_* its operator configured.
    """
    serve = {"RAY_SERVE_ENABLE_HA_PROXY": "1" if settings.serve_ha_proxy else "0",
             "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1" if settings.serve_throughput_optimized else "0"}
    if not settings.embedded_ray:
        return serve
    creds = credentials.load_or_create(settings.home)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": creds.ray_token, **serve}


def haproxy_dir(settings: Settings) -> Path:
    # HAProxy caps socket paths at 97 bytes and Serve adds a 56-character node id below this dir
    return Path("/tmp") / f"parlo-hap-{hashlib.sha256(str(settings.home).encode()).hexdigest()[:8]}"


def haproxy_env(settings: Settings) -> dict[str, str]:
    """Serve's HAProxy keeps its files in /tmp/haproxy-serve and listens on fixed stats and
    metrics ports by default: give each engine its own, so two engines on one machine coexist."""
    if not settings.serve_ha_proxy:
        return {}
    base = haproxy_dir(settings)
    base.mkdir(parents=True, exist_ok=True)
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(base / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_NBTHREAD": str(max(1, min(4, os.cpu_count() or 1))),
        # Serve's HTTP request metrics (serve_num_http_requests…) recorded by the replicas
        # themselves, not parsed in Python by HAProxy's manager actor from a log datagram per
        # request: ~0.06 ms less CPU a webhook in bench/webhook_ingest.py. HAProxy's own
        # serve_haproxy_* gauges go; the Gateway's /metrics counts every request anyway.
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    }


def _ray_executable() -> str:
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


def start_ray(settings: Settings) -> bool:
    if ray_running(settings):
        return False
    require_free_port(settings.ray_port, "the local Ray head", "PARLO_RAY_PORT")
    temp_dir = ray_temp_dir(settings)
    # Secrets of external services reach workers through runtime_env (actors/settings.py), not here.
    env = {**os.environ, **{k: v for k, v in settings.env().items() if k not in ("PARLO_DATABASE_URL", "PARLO_REDIS_URL")},
           "RAY_USAGE_STATS_ENABLED": "0", **ray_env(settings), **haproxy_env(settings)}
    log_file = settings.home / "logs" / "ray-start.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        result = subprocess.run(
            [_ray_executable(), "start", "--head", f"--port={settings.ray_port}", f"--num-cpus={settings.ray_num_cpus}",
             "--include-dashboard=false", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
             # the agent's default port (52365) is fixed: a second Ray on the machine would collide
             f"--dashboard-agent-listen-port={free_port()}",
             f"--ray-client-server-port={free_port()}",  # likewise its fixed 10001
             # one node, nothing to autoscale; drivers attach with log_to_driver=False and the
             # workers' log files are written without a monitor: ~165 MiB of processes saved
             "--no-monitor", "--include-log-monitor=false",
             "--disable-usage-stats"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=settings.home,
        )
    if result.returncode != 0:
        raise ServiceStartFailed(f"Ray did not start (exit {result.returncode}); see {log_file}")
    _stop_ray_client_server(settings)
    return True


def _stop_ray_client_server(settings: Settings) -> None:
    """`ray start` always launches a Ray Client server (ray:// connections) when its grpc extra is
    installed, and has no flag against it. Nothing of ours connects that way (the CLI and Serve
    attach by GCS address), so it goes: ~90 MiB less and one listening port fewer."""
    servers = [p for p in ray_processes(settings) if "ray.util.client.server" in (p.info["cmdline"] or [])]
    for proc in servers:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    psutil.wait_procs(servers, timeout=5)


def stop_ray(settings: Settings, grace_s: float = 5.0) -> bool:
    """Stop our Ray head and its workers (found by temp dir and parentage), never another Ray on the machine."""
    procs: dict[int, psutil.Process] = {}
    for proc in ray_processes(settings):
        procs[proc.pid] = proc
        try:
            for child in proc.children(recursive=True):
                procs[child.pid] = child
        except psutil.Error:
            pass
    if not procs:
        return False
    for proc in procs.values():
        try:
            proc.terminate()
        except psutil.Error:
            pass
    # Workers and the raylet exit within a second or two; gcs_server ignores SIGTERM for a long
    # time, and its state is not persistent, so it is killed after the grace period.
    _, alive = psutil.wait_procs(list(procs.values()), timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return True


def connect_ray(settings: Settings) -> None:
    # Ray reads its auth settings when first imported; this process is an edge (the CLI).
    os.environ.update(ray_env(settings))
    import ray

    if ray.is_initialized():
        return
    import ray.serve  # noqa: F401  (configures its logger on import; quiet it afterwards)

    for name in ("ray", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ray.init(address=ray_address(settings), namespace="parlo", logging_level=logging.WARNING, log_to_driver=False)


def serve_app_status(settings: Settings) -> str | None:
    """Status of the Serve application ``parlo`` (RUNNING, DEPLOYING, …) or None if there is none."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    connect_ray(settings)
    try:
        status = serve.status()
    except RayServeException:
        return None
    app = status.applications.get("parlo")
    return str(app.status) if app else None


def deploy_serve(settings: Settings) -> bool:
    """Deploy the Serve app if it is not there yet. Returns True if it was deployed now."""
    from ray import serve

    import serve_app

    current = serve_app_status(settings)
    if current is not None and "RUNNING" in current:
        return False
    if current is None and not _http_answers(settings):
        require_free_port(settings.http_port, "the Serve HTTP proxy", "PARLO_HTTP_PORT", settings.http_host)
    serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
    serve_app.reset_metrics_dir(settings.home / "metrics")
    serve.run(serve_app.build(settings), name=settings.serve_app, route_prefix="/", blocking=False)
    return True


# --- health ----------------------------------------------------------------------------------

def health_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    return f"http://{host}:{settings.http_port}/healthz"


def _http_answers(settings: Settings) -> bool:
    try:
        httpx.get(health_url(settings), timeout=2)
        return True
    except httpx.HTTPError:
        return False


def fetch_health(settings: Settings, timeout: float = 5.0) -> tuple[int, dict[str, Any]] | None:
    try:
        response = httpx.get(health_url(settings), timeout=timeout)
    except httpx.HTTPError:
        return None
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, {}


def wait_healthy(settings: Settings, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: tuple[int, dict[str, Any]] | None = None
    while time.monotonic() < deadline:
        last = fetch_health(settings)
        if last is not None and last[0] == 200:
            return last[1]
        time.sleep(0.5)
    if last is None:
        raise ServiceUnavailable(f"the engine did not answer on {health_url(settings)} within {timeout_s:g} s")
    failing = {k: v.get("error", v.get("status")) for k, v in last[1].get("components", {}).items() if v.get("status") != "ok"}
    raise ServiceUnavailable(f"the engine is not healthy after {timeout_s:g} s: {failing}")


# --- database --------------------------------------------------------------------------------

async def migrate(settings: Settings, on_progress: Callable[[migrations.Migration, int, int], None] | None = None,
                  schema_dir: Path = migrations.SCHEMA_DIR) -> list[migrations.Migration]:
    conn = await connect(database_url(settings))
    try:
        return await migrations.migrate(conn, schema_dir, on_progress)
    finally:
        await conn.close()


async def seed_demo(settings: Settings) -> tuple[bool, dict[str, str]]:
    """Create the demo tenant and its admin once; the password is printed once and kept in home."""
    login_file = settings.home / DEMO_LOGIN_FILE
    conn = await connect(database_url(settings))
    try:
        tenant = await tenants.get_by_slug(conn, DEMO_TENANT)
        if tenant is not None:
            stored = json.loads(login_file.read_text()) if login_file.exists() else {}
            return False, {"tenant": DEMO_TENANT, "email": stored.get("email", "admin@demo.parlo.local")}
        password = secrets.token_urlsafe(15)
        email = "admin@demo.parlo.local"
        async with conn.transaction():
            tenant = await tenants.create(conn, "Demo", DEMO_TENANT, actor="parlo up")
            try:
                await users.create(conn, tenant.id, email, "Demo Admin", password, role="admin")
            except Conflict:
                pass
        fd = os.open(login_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"tenant": DEMO_TENANT, "email": email, "password": password}, fh)
        return True, {"tenant": DEMO_TENANT, "email": email, "password": password}
    finally:
        await conn.close()


# --- the whole engine ------------------------------------------------------------------------

def preflight(settings: Settings) -> None:
    """Check every port we will need before starting anything, so a taken port starts nothing."""
    if settings.embedded_postgres and embedded_postgres(settings).pid() is None:
        require_free_port(settings.pg_port, "the embedded PostgreSQL", "PARLO_PG_PORT")
    if settings.embedded_redis and embedded_redis(settings).pid() is None:
        require_free_port(settings.redis_port, "the embedded Redis", "PARLO_REDIS_PORT")
    if settings.embedded_ray and not ray_running(settings):
        require_free_port(settings.ray_port, "the local Ray head", "PARLO_RAY_PORT")
        require_free_port(settings.http_port, "the Serve HTTP proxy", "PARLO_HTTP_PORT", settings.http_host)


def up(settings: Settings, step: Step = _quiet,
       on_migration: Callable[[migrations.Migration, int, int], None] | None = None) -> UpReport:
    started_at = time.monotonic()
    report = UpReport()
    preflight(settings)
    settings.home.mkdir(parents=True, exist_ok=True)
    creds = credentials.load_or_create(settings.home) if (settings.embedded_postgres or settings.embedded_redis) else None

    if settings.embedded_postgres:
        assert creds is not None
        step("PostgreSQL")
        pg = embedded_postgres(settings)
        pg.init(creds.postgres_superuser)
        (report.started if pg.start() else report.reused).append("postgres")
        # idempotent and cheap: roles and extensions a newer version needs appear on the next `up`
        asyncio.run(bootstrap_embedded_database(pg, creds))

    step("migrations")
    report.migrations_applied = [m.filename for m in asyncio.run(migrate(settings, on_migration))]

    if settings.embedded_redis:
        assert creds is not None
        step("Redis")
        (report.started if embedded_redis(settings).start(creds.redis) else report.reused).append("redis")

    if settings.embedded_ray:
        step("Ray")
        (report.started if start_ray(settings) else report.reused).append("ray")

    step("Serve application")
    connect_ray(settings)
    (report.started if deploy_serve(settings) else report.reused).append("serve")

    step("demo tenant")
    report.demo_created, report.demo_login = asyncio.run(seed_demo(settings))

    step("health")
    wait_healthy(settings, settings.startup_timeout_s)
    report.seconds = time.monotonic() - started_at
    return report


def down(settings: Settings, step: Step = _quiet) -> list[str]:
    stopped = []
    if settings.embedded_ray:
        step("Ray")
        if stop_ray(settings):
            stopped.append("ray")
        shutil.rmtree(ray_temp_dir(settings), ignore_errors=True)
        shutil.rmtree(haproxy_dir(settings), ignore_errors=True)
    if settings.embedded_redis:
        step("Redis")
        if embedded_redis(settings).stop():
            stopped.append("redis")
    if settings.embedded_postgres:
        step("PostgreSQL")
        if embedded_postgres(settings).stop():
            stopped.append("postgres")
    return stopped


# --- status ----------------------------------------------------------------------------------

async def _probe_postgres(url: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        conn = await connect(url, timeout=3)
    except ServiceUnavailable as exc:
        return {"status": "error", "error": str(exc)}
    try:
        version = await conn.fetchval("SELECT max(version) FROM schema_migrations") \
            if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL") else None
    finally:
        await conn.close()
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2), "schema_version": version}


async def _probe_redis(url: str) -> dict[str, Any]:
    import redis.asyncio as aioredis

    started = time.perf_counter()
    client = aioredis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        await client.ping()
    except Exception as exc:  # reported, not raised: status shows every component
        from engine.secrets import mask_text

        return {"status": "error", "error": mask_text(str(exc) or type(exc).__name__)}
    finally:
        await client.aclose()
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def status(settings: Settings, show_secrets: bool = False) -> dict[str, Any]:
    shown = (lambda url: url) if show_secrets else mask_url
    urls = resolve(settings)
    components: dict[str, Any] = {}

    pg = {"mode": "embedded" if settings.embedded_postgres else "external", "url": shown(urls.database)}
    if settings.embedded_postgres:
        pg["pid"] = embedded_postgres(settings).pid()
        pg["data_dir"] = str(settings.home / "postgres")
    pg.update(asyncio.run(_probe_postgres(urls.database)))
    components["postgres"] = pg

    rd = {"mode": "embedded" if settings.embedded_redis else "external", "url": shown(urls.redis)}
    if settings.embedded_redis:
        rd["pid"] = embedded_redis(settings).pid()
    rd.update(asyncio.run(_probe_redis(urls.redis)))
    components["redis"] = rd

    running = ray_running(settings)
    components["ray"] = {"mode": "embedded" if settings.embedded_ray else "external", "address": ray_address(settings),
                         "status": "ok" if running else "error", **({} if running else {"error": "not running"})}

    health = fetch_health(settings)
    if health is None:
        components["serve"] = {"status": "error", "url": settings.public_url, "error": f"no answer on {health_url(settings)}"}
        components["shards"] = {"status": "error", "error": "unknown while the Serve app is down"}
    else:
        code, body = health
        components["serve"] = {"status": "ok" if code == 200 else "error", "url": settings.public_url, "http_status": code}
        components["shards"] = body.get("components", {}).get("shards", {"status": "error", "error": "not reported"})
    healthy = all(c.get("status") == "ok" for c in components.values())
    return {"status": "ok" if healthy else "error", "home": str(settings.home), "components": components}
