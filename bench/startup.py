"""Startup time and memory footprint of the whole engine, measured through the ``parlo`` CLI.

Each run gets a fresh PARLO_HOME under /tmp and free ports, so it never touches a developer's
running engine, and measures:

* cold start: ``parlo up`` on an empty home, wall-clock until it exits 0 (it returns only once
  ``/healthz`` answers 200), then ``/healthz`` checked once more with httpx;
* memory right after the cold start: RSS (and USS/PSS where readable) of every engine process,
  grouped as postgres, redis, ray core, serve controller+proxy, serve replicas, shards and other
  ray workers;
* warm start: ``parlo down`` then ``parlo up`` with the data in place;
* no-op start: a second ``parlo up`` while everything runs.

The figures are checked against the aims (healthy within 45 s on a warm start, total RSS within
2 GiB), printed as a table and written to ``bench/results/startup.json`` and ``startup.md``.

Run it from the repository root::

    .venv/bin/python bench/startup.py            # one run
    .venv/bin/python bench/startup.py --runs 3   # three runs, each from a fresh home
    .venv/bin/python bench/startup.py --keep     # leave the last run's engine up to poke at

Summed RSS counts shared pages (PostgreSQL shared buffers, Ray's object store, shared libraries)
once per process, so it overstates the footprint; summed USS understates it; PSS sits between.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script, the repo root is not on sys.path
    sys.path.insert(0, str(REPO))

from cli import runtime  # noqa: E402
from engine.config import Settings, load_settings  # noqa: E402
from engine.embedded.ports import free_port  # noqa: E402
from engine.services import embedded_postgres, embedded_redis  # noqa: E402
from bench.report import git, machine, write_report  # noqa: E402

PARLO = Path(sys.executable).parent / "parlo"
MIB = 1024 * 1024

AIM_WARM_S = 45.0
AIM_TOTAL_RSS_MIB = 2048.0
UP_TIMEOUT_S = 300.0
DOWN_TIMEOUT_S = 120.0
STDERR_TAIL_LINES = 15

console = Console()


class BenchError(Exception):
    """A step of the benchmark failed; the message is shown as is."""


class Group(StrEnum):
    POSTGRES = "postgres"
    REDIS = "redis"
    RAY_CORE = "ray core"
    SERVE_CONTROL = "serve controller+proxy"
    SERVE_REPLICAS = "serve replicas"
    SHARDS = "shards"
    RAY_WORKERS = "other ray workers"


# --- the engine under test -------------------------------------------------------------------

@dataclass(frozen=True)
class Engine:
    """One isolated engine: its home, its ports and the environment every ``parlo`` call gets."""

    home: Path
    settings: Settings
    env: dict[str, str]

    @classmethod
    def fresh(cls) -> Engine:
        home = Path(tempfile.mkdtemp(prefix="parlo-bench-", dir="/tmp"))
        ports = {"PARLO_HTTP_PORT": free_port(), "PARLO_PG_PORT": free_port(),
                 "PARLO_REDIS_PORT": free_port(), "PARLO_RAY_PORT": free_port()}
        overrides = {"PARLO_HOME": str(home), **{k: str(v) for k, v in ports.items()}}
        # Inherited PARLO_* variables (an external database URL, say) would leak a developer's
        # setup into the benchmark, so the child environment starts without any.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLO_")} | overrides
        settings = load_settings(_env_file=None, home=home, http_port=ports["PARLO_HTTP_PORT"],
                                 pg_port=ports["PARLO_PG_PORT"], redis_port=ports["PARLO_REDIS_PORT"],
                                 ray_port=ports["PARLO_RAY_PORT"])
        return cls(home, settings, env)

    def parlo(self, command: str, timeout_s: float, *args: str) -> float:
        """Run ``parlo <command> [args]``; return its wall-clock seconds, or raise with the tail of its stderr."""
        started = time.perf_counter()
        try:
            # cwd is the home so that no stray .env in the caller's directory is picked up.
            result = subprocess.run([str(PARLO), command, *args], env=self.env, cwd=self.home,
                                    capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"`parlo {command}` did not finish within {timeout_s:g} s"
                             f"{_tail(_text(exc.stderr))}") from None
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise BenchError(f"`parlo {command}` failed (exit {result.returncode}) after {seconds:.1f} s"
                             f"{_tail(result.stderr or result.stdout)}\n  logs: {self.home / 'logs'}")
        return seconds

    def check_healthy(self) -> None:
        url = runtime.health_url(self.settings)
        try:
            response = httpx.get(url, timeout=10)
        except httpx.HTTPError as exc:
            raise BenchError(f"{url} did not answer after `parlo up` returned: {exc}") from None
        if response.status_code != 200:
            raise BenchError(f"{url} answered {response.status_code} after `parlo up` returned: {response.text[:500]}")

    def shell_prefix(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.env.items() if k.startswith("PARLO_"))


def _text(stream: str | bytes | None) -> str:
    if isinstance(stream, bytes):
        return stream.decode(errors="replace")
    return stream or ""


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()][-STDERR_TAIL_LINES:]
    return "\n  " + "\n  ".join(lines) if lines else ""


def wait_quiet(busy_below_percent: float = 20.0, timeout_s: float = 120.0) -> float:
    """Wait until the machine is idle (the engine's start-up work done: the Assistant warms its
    model in the background after `parlo up` returns). Returns the seconds waited; a measurement
    taken while a model loads beside it would blame the path under test for that CPU."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if psutil.cpu_percent(interval=1.0) < busy_below_percent:
            break
    return time.monotonic() - started


@contextmanager
def running_engine(keep: bool) -> Iterator[Engine]:
    """A fresh engine that is always stopped and removed afterwards, unless kept."""
    engine = Engine.fresh()
    succeeded = False
    try:
        yield engine
        succeeded = True
    finally:
        if succeeded and keep:
            console.print(f"[yellow]kept running[/]; stop it with: {engine.shell_prefix()} {PARLO} down "
                          f"&& rm -rf {engine.home}", highlight=False)
        else:
            _stop(engine, remove_home=succeeded)


def _stop(engine: Engine, remove_home: bool) -> None:
    """Stop the engine; its home goes too, unless a failure left logs in it worth reading."""
    try:
        engine.parlo("down", DOWN_TIMEOUT_S)
    except BenchError as exc:
        console.print(f"[red]could not stop the engine; its home is kept at {engine.home}[/]\n{exc}", highlight=False)
        return
    if remove_home:
        shutil.rmtree(engine.home, ignore_errors=True)
    else:
        console.print(f"engine stopped; its home (logs in {engine.home / 'logs'}) is kept for a look", highlight=False)


# --- memory ----------------------------------------------------------------------------------

@dataclass
class GroupMemory:
    processes: int = 0
    rss_mib: float = 0.0
    uss_mib: float | None = 0.0  # None once any process of the group could not be read
    pss_mib: float | None = 0.0

    def add(self, proc: psutil.Process) -> None:
        try:
            full = proc.memory_full_info()
        except psutil.AccessDenied:
            self.rss_mib += proc.memory_info().rss / MIB
            self.uss_mib = self.pss_mib = None
        else:
            self.rss_mib += full.rss / MIB
            self.uss_mib = None if self.uss_mib is None else self.uss_mib + full.uss / MIB
            pss = getattr(full, "pss", None)  # Linux only
            self.pss_mib = None if self.pss_mib is None or pss is None else self.pss_mib + pss / MIB
        self.processes += 1


def _with_children(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [root]


def engine_processes(settings: Settings) -> dict[int, tuple[Group, psutil.Process]]:
    """Every process of the engine, found the way the CLI finds them, with its group."""
    found: dict[int, tuple[Group, psutil.Process]] = {}
    for group, pid in ((Group.POSTGRES, embedded_postgres(settings).pid()), (Group.REDIS, embedded_redis(settings).pid())):
        if pid is None:
            raise BenchError(f"{group} is not running for {settings.home} (no live pid in its pid file)")
        for proc in _with_children(psutil.Process(pid)):
            found[proc.pid] = (group, proc)
    ray_roots = runtime.ray_processes(settings)
    if not ray_roots:
        raise BenchError(f"no Ray process found for {settings.home} (temp dir {runtime.ray_temp_dir(settings)})")
    for root in ray_roots:
        for proc in _with_children(root):
            if proc.pid not in found:
                try:
                    found[proc.pid] = (_ray_group(proc.cmdline()), proc)
                except psutil.Error:
                    continue
    return found


def _ray_group(cmdline: list[str]) -> Group:
    title = " ".join(cmdline)
    if title.startswith("ray::"):
        # Actor titles read ``ray::Class`` when idle and ``ray::Class.method()`` while busy.
        name = title.removeprefix("ray::")
        if name.startswith(("ServeController", "ProxyActor", "HTTPProxyActor")):
            return Group.SERVE_CONTROL
        if name.startswith("ServeReplica"):
            return Group.SERVE_REPLICAS
        if name.startswith("ConversationShard"):
            return Group.SHARDS
        if name.startswith(("DashboardAgent", "RuntimeEnvAgent")):
            return Group.RAY_CORE
        return Group.RAY_WORKERS
    if any(Path(part).name in ("setup_worker.py", "default_worker.py") for part in cmdline[:3]):
        return Group.RAY_WORKERS  # a worker that has not set its title yet
    return Group.RAY_CORE  # gcs_server, raylet, dashboard, monitor, log_monitor, agents


def measure_memory(settings: Settings) -> dict[str, GroupMemory]:
    groups = {group.value: GroupMemory() for group in Group}
    for group, proc in engine_processes(settings).values():
        try:
            groups[group.value].add(proc)
        except psutil.NoSuchProcess:  # a worker that exited between listing and reading
            continue
    return groups


# --- one run ---------------------------------------------------------------------------------

@dataclass
class RunResult:
    cold_up_s: float
    warm_up_s: float
    noop_up_s: float
    memory: dict[str, GroupMemory]

    @property
    def total_rss_mib(self) -> float:
        return sum(g.rss_mib for g in self.memory.values())

    @property
    def total_uss_mib(self) -> float | None:
        values = [g.uss_mib for g in self.memory.values()]
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)

    @property
    def total_pss_mib(self) -> float | None:
        values = [g.pss_mib for g in self.memory.values()]
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def run_once(engine: Engine, index: int, runs: int) -> RunResult:
    label = f"run {index}/{runs}"
    with console.status(f"{label}: cold start (empty home {engine.home})…"):
        cold = engine.parlo("up", UP_TIMEOUT_S)
        engine.check_healthy()
    console.print(f"{label}: cold up {cold:.1f} s")
    memory = measure_memory(engine.settings)
    with console.status(f"{label}: stopping for the warm start…"):
        engine.parlo("down", DOWN_TIMEOUT_S)
    with console.status(f"{label}: warm start…"):
        warm = engine.parlo("up", UP_TIMEOUT_S)
        engine.check_healthy()
    console.print(f"{label}: warm up {warm:.1f} s")
    with console.status(f"{label}: no-op start…"):
        noop = engine.parlo("up", UP_TIMEOUT_S)
    console.print(f"{label}: no-op up {noop:.1f} s")
    return RunResult(cold, warm, noop, memory)


# --- report ----------------------------------------------------------------------------------

@dataclass
class Aim:
    name: str
    limit: str
    measured: str
    met: bool


@dataclass
class Report:
    timestamp: str
    git_revision: str | None
    git_dirty: bool | None
    machine: dict[str, Any]
    runs: list[RunResult]
    aims: list[Aim] = field(default_factory=list)

    @property
    def cold_s(self) -> float:
        return statistics.median(r.cold_up_s for r in self.runs)

    @property
    def warm_s(self) -> float:
        return statistics.median(r.warm_up_s for r in self.runs)

    @property
    def noop_s(self) -> float:
        return statistics.median(r.noop_up_s for r in self.runs)

    @property
    def worst_warm_s(self) -> float:
        return max(r.warm_up_s for r in self.runs)

    @property
    def worst_total_rss_mib(self) -> float:
        return max(r.total_rss_mib for r in self.runs)

    @property
    def memory(self) -> RunResult:
        """The run with the largest footprint: the one the memory aim is judged on."""
        return max(self.runs, key=lambda r: r.total_rss_mib)

    def to_json(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "git_revision": self.git_revision,
            "git_dirty": self.git_dirty,
            "machine": self.machine,
            "summary": {
                "runs": len(self.runs),
                "cold_up_s_median": round(self.cold_s, 2),
                "warm_up_s_median": round(self.warm_s, 2),
                "noop_up_s_median": round(self.noop_s, 2),
                "warm_over_cold": round(self.warm_s / self.cold_s, 3),
                "worst_warm_up_s": round(self.worst_warm_s, 2),
                "worst_total_rss_mib": round(self.worst_total_rss_mib, 1),
            },
            "aims": [asdict(aim) for aim in self.aims],
            "runs": [
                {"cold_up_s": round(r.cold_up_s, 2), "warm_up_s": round(r.warm_up_s, 2),
                 "noop_up_s": round(r.noop_up_s, 2),
                 "memory_mib": {name: _rounded(asdict(g)) for name, g in r.memory.items()},
                 "total_rss_mib": round(r.total_rss_mib, 1),
                 "total_uss_mib": _round(r.total_uss_mib), "total_pss_mib": _round(r.total_pss_mib)}
                for r in self.runs
            ],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _round(v) if isinstance(v, float) else v for k, v in values.items()}


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def judge(report: Report) -> None:
    per = "" if len(report.runs) == 1 else f" (worst of {len(report.runs)})"
    report.aims = [
        Aim(f"healthy after a warm start{per}", f"<= {AIM_WARM_S:g} s", f"{report.worst_warm_s:.1f} s",
            report.worst_warm_s <= AIM_WARM_S),
        Aim(f"total RSS{per}", f"<= {AIM_TOTAL_RSS_MIB:,.0f} MiB", f"{report.worst_total_rss_mib:,.0f} MiB",
            report.worst_total_rss_mib <= AIM_TOTAL_RSS_MIB),
    ]


def print_report(report: Report) -> None:
    n = len(report.runs)
    timing = Table(title=f"Startup ({'median of ' + str(n) + ' runs' if n > 1 else '1 run'})")
    timing.add_column("start")
    timing.add_column("seconds", justify="right")
    timing.add_row("cold up (empty home)", f"{report.cold_s:.1f}")
    timing.add_row("warm up (data in place)", f"{report.warm_s:.1f}")
    timing.add_row("no-op up (already running)", f"{report.noop_s:.1f}")
    timing.add_row("warm / cold", f"{report.warm_s / report.cold_s:.2f}")
    console.print(timing)

    run = report.memory
    memory = Table(title="Memory after the cold start (MiB)")
    memory.add_column("group")
    memory.add_column("procs", justify="right")
    memory.add_column("RSS", justify="right")
    memory.add_column("USS", justify="right")
    memory.add_column("PSS", justify="right")
    for name, g in run.memory.items():
        memory.add_row(name, str(g.processes), _mib(g.rss_mib), _mib(g.uss_mib), _mib(g.pss_mib))
    memory.add_section()
    memory.add_row("[bold]total[/]", str(sum(g.processes for g in run.memory.values())),
                   f"[bold]{_mib(run.total_rss_mib)}[/]", _mib(run.total_uss_mib), _mib(run.total_pss_mib))
    console.print(memory)

    aims = Table(title="Aims")
    aims.add_column("aim")
    aims.add_column("limit", justify="right")
    aims.add_column("measured", justify="right")
    aims.add_column("")
    for aim in report.aims:
        aims.add_row(aim.name, aim.limit, aim.measured, "[green]met[/]" if aim.met else "[red]not met[/]")
    console.print(aims)


def markdown(report: Report) -> str:
    n = len(report.runs)
    m = report.machine
    run = report.memory
    lines = [
        "# Startup benchmark",
        "",
        f"{report.timestamp} · revision `{report.git_revision or 'unknown'}`{' (dirty tree)' if report.git_dirty else ''} · "
        f"{m['cpus_logical']} CPUs, {m['memory_gib']} GiB RAM, {m['platform']} · "
        f"{n} run{'s' if n > 1 else ''}{' (medians)' if n > 1 else ''}",
        "",
        "| start | seconds |",
        "|---|---:|",
        f"| cold up (empty home) | {report.cold_s:.1f} |",
        f"| warm up (data in place) | {report.warm_s:.1f} |",
        f"| no-op up (already running) | {report.noop_s:.1f} |",
        f"| warm / cold | {report.warm_s / report.cold_s:.2f} |",
        "",
        "Memory after the cold start (MiB):",
        "",
        "| group | procs | RSS | USS | PSS |",
        "|---|---:|---:|---:|---:|",
        *(f"| {name} | {g.processes} | {_mib(g.rss_mib)} | {_mib(g.uss_mib)} | {_mib(g.pss_mib)} |"
          for name, g in run.memory.items()),
        f"| **total** | {sum(g.processes for g in run.memory.values())} | **{_mib(run.total_rss_mib)}** | "
        f"{_mib(run.total_uss_mib)} | {_mib(run.total_pss_mib)} |",
        "",
        "| aim | limit | measured | |",
        "|---|---:|---:|---|",
        *(f"| {a.name} | {a.limit} | {a.measured} | {'met' if a.met else '**not met**'} |" for a in report.aims),
        "",
        "Summed RSS counts shared pages once per process (an upper bound); summed USS is a lower bound.",
        "",
        "Regenerate with `.venv/bin/python bench/startup.py` (or `make bench`).",
        "",
    ]
    return "\n".join(lines)


def write_results(report: Report) -> list[Path]:
    return write_report("startup", report.to_json(), markdown(report))


# --- entry point -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1, help="cold/warm/no-op cycles, each from a fresh home (default 1)")
    parser.add_argument("--keep", action="store_true", help="leave the last run's engine running and its home in place")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not PARLO.exists():
        console.print(f"[red]bench: {PARLO} not found; install the project first (make install)[/]")
        return 2

    results: list[RunResult] = []
    try:
        for index in range(1, args.runs + 1):
            with running_engine(keep=args.keep and index == args.runs) as engine:
                results.append(run_once(engine, index, args.runs))
    except BenchError as exc:
        console.print(f"[red]bench: {exc}[/]", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("[red]bench: interrupted[/]")
        return 130

    status = git("status", "--porcelain")
    report = Report(
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        git_revision=git("rev-parse", "HEAD"),
        git_dirty=None if status is None else bool(status),
        machine=machine(),
        runs=results,
    )
    judge(report)
    print_report(report)
    for path in write_results(report):
        console.print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
