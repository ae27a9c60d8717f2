"""docker-compose.yml is valid Compose and runs only commands the test suite exercises."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).resolve().parent / "specs" / "compose-spec.json"

# Each command is run by the test named beside it (the Celery ones through compose_command()).
EXERCISED = {
    "migrate": ("campaigns", "migrate"),  # tests/integration/test_cli.py
    "web": ("campaigns", "serve"),  # tests/integration/test_cli.py::test_serve_*, tests/faults
    "staff": ("campaigns", "serve"),  # tests/integration/test_cli.py::test_serve_*, tests/faults
    "worker": ("celery", "-A", "workers.app", "worker"),  # test_celery_e2e.py
    "beat": ("celery", "-A", "workers.app", "beat"),  # test_celery_e2e.py
}


def compose() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_file_validates_against_the_official_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    # The spec names a metaschema URL jsonschema does not bundle; it is draft-07 in substance.
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_has_the_production_services() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    assert set(services) >= {"postgres", "redis", "migrate", "web", "staff", "worker", "beat"}


def test_only_the_public_part_faces_the_internet() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    web, staff = services["web"], services["staff"]
    assert web["command"][2:4] == ["--only", "webhooks"]
    assert staff["command"][2:4] == ["--only", "staff"]
    # The staff listener is published on the host's loopback only (or not at all).
    for mapping in staff.get("ports", []):
        assert str(mapping).startswith("127.0.0.1:"), mapping
    for name, service in services.items():
        if name != "web":
            for mapping in service.get("ports", []):
                assert str(mapping).startswith("127.0.0.1:"), (name, mapping)


def test_every_app_command_is_one_the_tests_run() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    for name, prefix in EXERCISED.items():
        command = services[name]["command"]
        assert tuple(command[: len(prefix)]) == prefix, (name, command)
    for name, service in services.items():
        if name not in EXERCISED and "build" in service:
            raise AssertionError(f"service {name} runs our image but no test exercises it")


def test_worker_settings_follow_the_design() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    command = services["worker"]["command"]
    assert "--without-gossip" in command and "--without-mingle" in command
    assert "send.sms" in " ".join(command) and "send.email" in " ".join(command)
