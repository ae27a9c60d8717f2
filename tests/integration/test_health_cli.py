"""`campaigns health worker|beat`, the containers' healthchecks, exactly as docker-compose.yml
runs them: 0 while the process touches its liveness file, 1 with a reason when the file is
stale or missing (the process is stuck, gone, or never started)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.processes import BIN, ROOT, env_with, run

pytestmark = pytest.mark.slow


def healthcheck(service: str) -> list[str]:
    """The healthcheck argv docker-compose.yml gives a service, with this environment's
    executable."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    kind, program, *args = compose["services"][service]["healthcheck"]["test"]
    assert kind == "CMD"
    return [str(BIN / program), *args]


def max_age(argv: list[str]) -> float:
    return float(argv[argv.index("--max-age") + 1])


@pytest.mark.parametrize("role", ["worker", "beat"])
def test_a_fresh_liveness_file_is_healthy(role: str, tmp_path: Path) -> None:
    (tmp_path / f"campaigns-{role}.alive").touch()
    done = run(healthcheck(role), env_with(CAMPAIGNS_HEALTH_DIR=str(tmp_path)), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{role}: well ")


@pytest.mark.parametrize("role", ["worker", "beat"])
def test_a_stale_liveness_file_is_unhealthy(role: str, tmp_path: Path) -> None:
    argv = healthcheck(role)
    alive = tmp_path / f"campaigns-{role}.alive"
    alive.touch()
    stale = time.time() - max_age(argv) - 90
    os.utime(alive, (stale, stale))
    done = run(argv, env_with(CAMPAIGNS_HEALTH_DIR=str(tmp_path)), timeout=60)
    assert done.returncode == 1
    assert f"{role}: unhealthy (last well 2 min ago, over {max_age(argv):g} s)" in done.stderr


@pytest.mark.parametrize("role", ["worker", "beat"])
def test_a_missing_liveness_file_is_unhealthy(role: str, tmp_path: Path) -> None:
    done = run(healthcheck(role), env_with(CAMPAIGNS_HEALTH_DIR=str(tmp_path)), timeout=60)
    assert done.returncode == 1
    assert f"{role}: unhealthy (no liveness file {tmp_path}/campaigns-{role}.alive" in done.stderr


def test_an_unknown_role_is_refused(tmp_path: Path) -> None:
    done = run(
        [str(BIN / "campaigns"), "health", "web"],
        env_with(CAMPAIGNS_HEALTH_DIR=str(tmp_path)),
        timeout=60,
    )
    assert done.returncode == 2
    assert "the role is worker or beat" in done.stderr
