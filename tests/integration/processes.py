"""Running the project's real commands as subprocesses, the way operators and CI do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def compose_command(service: str) -> list[str]:
    """The argv docker-compose.yml gives a service, resolved to this environment's executables."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    argv = list(compose["services"][service]["command"])
    return [str(BIN / argv[0]), *argv[1:]]


def env_with(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGNS_")}
    env.update(values)
    return env


def run(
    argv: list[str], env: Mapping[str, str], timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=input,
    )


def campaigns(
    *args: str, env: Mapping[str, str], timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "campaigns"), *args], env, timeout, input)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Spawned(subprocess.Popen[str]):
    """A long-running command started by spawn(), with the file its output goes to."""

    log_path: Path


def spawn(argv: list[str], env: Mapping[str, str], log: Path) -> Spawned:
    """Start a long-running command; its output goes to a file (a pipe nobody reads would
    fill up and block the process's logging)."""
    with log.open("w") as sink:
        process = Spawned(
            argv, env=dict(env), cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, text=True
        )
    process.log_path = log
    return process


def stop(process: Spawned) -> str:
    """Stop a process started with spawn() and return what it wrote."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return process.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(port: int, log: Path) -> Spawned:
    """A Redis of the test's own (nothing on disk), so the test may kill and restart it."""
    process = spawn(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        os.environ,
        log,
    )
    wait_until(lambda: _answers(port), 15, f"redis on port {port}")
    return process


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
