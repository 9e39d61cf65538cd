"""An embedded PostgreSQL 16 (with pgvector) run from the binaries that ``pgserver`` ships.

Unlike ``pgserver.get_server`` (unix socket only, trust auth, stopped at interpreter exit), this
server listens on 127.0.0.1 with scram-sha-256 passwords, outlives the process that started it,
and is stopped explicitly, so every client reaches it exactly as it would reach a real server.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil

from engine.embedded.logs import log_tail
from engine.embedded.ports import require_free_port
from engine.errors import ServiceStartFailed

SUPERUSER = "postgres"


def _pgserver_import() -> None:
    # pgserver computes a runtime dir at import and warns when XDG_RUNTIME_DIR is unset; we never use it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # noqa: F401


def _bin(name: str) -> str:
    _pgserver_import()
    from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _run_as() -> dict[str, object]:
    """PostgreSQL refuses to run as root: when we are root, run it as pgserver's unprivileged user."""
    if os.geteuid() != 0:
        return {}
    _pgserver_import()
    from pgserver.utils import ensure_user_exists

    ensure_user_exists("pgserver")
    return {"user": "pgserver", "group": "pgserver"}


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int
    log_file: Path

    def admin_url(self, password: str, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def pid(self) -> int | None:
        """PID of the running postmaster for this data directory, or None."""
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or "postgres" not in proc.name():
                return None
        except psutil.Error:
            return None
        return pid

    def running_port(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            return int(pidfile.read_text().splitlines()[3])
        except (OSError, ValueError, IndexError):
            return None

    def _prepare_dirs(self) -> dict[str, object]:
        run_as = _run_as()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if run_as:
            import shutil

            from pgserver.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)
            shutil.chown(self.data_dir, "pgserver", "pgserver")
            self.log_file.touch(exist_ok=True)
            shutil.chown(self.log_file, "pgserver", "pgserver")
        return run_as

    def init(self, superuser_password: str) -> None:
        run_as = self._prepare_dirs()
        if self.initialized:
            return
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir.parent, delete=False) as pw:
            pw.write(superuser_password + "\n")
        try:
            if run_as:
                import shutil

                shutil.chown(pw.name, "pgserver", "pgserver")
            result = subprocess.run(
                [_bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--pwfile", pw.name,
                 "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"],
                capture_output=True, text=True, **run_as,  # type: ignore[call-overload]
            )
        finally:
            os.unlink(pw.name)
        if result.returncode != 0:
            raise ServiceStartFailed(f"initdb failed for {self.data_dir}: {result.stderr.strip().splitlines()[-1:]}")

    def start(self, timeout_s: float = 30.0) -> bool:
        """Start the server if it is not running. Returns True if it was started now."""
        if self.pid() is not None:
            return False
        require_free_port(self.port, "the embedded PostgreSQL", "PARLO_PG_PORT")
        run_as = self._prepare_dirs()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c max_connections=200"
        result = subprocess.run(
            [_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", str(int(timeout_s)),
             "-o", options, "start"],
            capture_output=True, text=True, **run_as,  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            raise ServiceStartFailed(f"PostgreSQL did not start on port {self.port}: {log_tail(self.log_file, ('FATAL', 'ERROR'))}")
        return True

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the server (fast shutdown: sessions are disconnected, data is flushed). Returns True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        subprocess.run(
            [_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(int(timeout_s)), "stop"],
            capture_output=True, text=True, **_run_as(),  # type: ignore[call-overload]
        )
        deadline = time.monotonic() + timeout_s
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        return True
