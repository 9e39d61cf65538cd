from __future__ import annotations

import socket

from engine.errors import PortInUse


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free_port(port: int, what: str, setting: str, host: str = "127.0.0.1") -> None:
    if not port_is_free(port, host):
        raise PortInUse(f"port {port} on {host} is already in use by another program; {what} needs it (set {setting} to another port)")


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (for tests and second instances)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
