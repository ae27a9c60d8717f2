"""docker-compose.yml is valid Compose, runs only commands the test suite exercises, passes every
setting the code reads through from .env (which .env.example documents), and gives every
service a healthcheck and a restart policy."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from campaigns.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).resolve().parent / "specs" / "compose-spec.json"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

# Each command is run by the test named beside it (the Celery ones through compose_command()).
EXERCISED = {
    "migrate": ("campaigns", "migrate"),  # tests/integration/test_cli.py
    "web": ("campaigns", "serve"),  # tests/integration/test_cli.py::test_serve_*, tests/faults
    "staff": ("campaigns", "serve"),  # tests/integration/test_cli.py::test_serve_*, tests/faults
    "worker": ("celery", "-A", "workers.app", "worker"),  # test_celery_e2e.py
    "beat": ("celery", "-A", "workers.app", "beat"),  # test_celery_e2e.py
    "flower": ("celery", "-A", "workers.app", "flower"),  # tests/integration/test_flower.py
}
# Services that run someone else's image and command, and why that is accepted without a test
# of ours running it.
THIRD_PARTY = {
    "postgres": "the official image's server; the tests run the same major version locally",
    "redis": "the official image's server; the tests run redis-server with the same flags",
    "prometheus": "its configuration and rules are checked by promtool (test_monitoring.py)",
    "alertmanager": "its configuration's routes and inhibitions are checked below",
    "blackbox": "the image's default configuration (module http_2xx) is what prometheus.yml asks",
    "grafana": "its provisioning and dashboard are checked by test_monitoring.py",
}
MONITORING = {"prometheus", "alertmanager", "blackbox", "grafana"}
# Settings docker-compose.yml fixes instead of reading .env: its own wiring, not a choice.
FIXED = {
    "CAMPAIGNS_ENVIRONMENT": "the production compose file",
    "CAMPAIGNS_DATABASE_URL": "the compose PostgreSQL (its password comes from .env)",
    "CAMPAIGNS_BROKER_URL": "the compose Redis",
    "CAMPAIGNS_METRICS_PORT": "the port deploy/prometheus/prometheus.yml scrapes",
}
# A one-shot's health is its exit code (depends_on: service_completed_successfully), and a
# failed migration must stop the deploy, not loop.
ONE_SHOT = {"migrate"}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY|BASIC_AUTH|ACCOUNT_SID")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $$ escapes.
REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def app_services() -> dict[str, dict[str, Any]]:
    """The services that run our image (and so read campaigns.settings)."""
    return {name: s for name, s in services().items() if "build" in s}


def setting_env_names() -> set[str]:
    """Every environment variable Settings reads, from the model itself: a field's alias, or
    the prefix and its name. A new setting is in here the moment it is added."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(f"{prefix}{name}".upper())
        elif isinstance(alias, str):
            names.add(alias)
        else:  # AliasChoices or AliasPath: teach this test which names compose must pass
            raise AssertionError(f"Settings.{name}: an alias this test cannot read: {alias!r}")
    return names


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert name not in values, f".env.example sets {name} twice"
            values[name] = value
    return values


def strings(node: object) -> list[str]:
    """Every string in the loaded file (what compose interpolates; comments are not)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in strings(key) + strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in strings(item)]
    return []


class Missing(Exception):
    pass


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one value, with `env` as the .env file."""

    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        given = env.get(name)
        empty = given is None or (given == "" and operator and operator.startswith(":"))
        if operator and operator.endswith("?") and empty:
            raise Missing(f"{name}: {argument}")
        if operator and operator.endswith("-") and empty:
            return argument
        return given or ""

    return REFERENCE.sub(one, value).replace("$$", "$")


def container_env(service: str, env: Mapping[str, str]) -> dict[str, str]:
    """The environment a service's container gets from `env` as .env."""
    environment = services()[service].get("environment", {})
    assert isinstance(environment, dict), f"{service}: environment as a mapping, please"
    return {k: interpolate(str(v), env) for k, v in environment.items()}


# --- the file's shape -------------------------------------------------------------------------


def test_compose_file_validates_against_the_official_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    # The spec names a metaschema URL jsonschema does not bundle; it is draft-07 in substance.
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_has_the_production_services() -> None:
    found = services()
    assert set(found) >= {"postgres", "redis", "migrate", "web", "staff", "worker", "beat"}
    assert set(found) >= {"flower"} | MONITORING


def test_the_monitoring_stack_is_a_profile_and_the_service_is_not() -> None:
    for name, service in services().items():
        if name in MONITORING:
            assert service.get("profiles") == ["monitoring"], name
        else:
            assert "profiles" not in service, f"{name} must start with a plain `up`"


def test_only_the_public_part_faces_the_internet() -> None:
    found = services()
    web, staff = found["web"], found["staff"]
    assert web["command"][2:4] == ["--only", "webhooks"]
    assert staff["command"][2:4] == ["--only", "staff"]
    # Everything but the public listener is published on the host's loopback only, or not at all.
    for name, service in found.items():
        if name != "web":
            for mapping in service.get("ports", []):
                assert str(mapping).startswith("127.0.0.1:"), (name, mapping)


def test_every_app_command_is_one_the_tests_run() -> None:
    found = services()
    for name, prefix in EXERCISED.items():
        command = found[name]["command"]
        assert tuple(command[: len(prefix)]) == prefix, (name, command)
    for name, service in found.items():
        if "build" in service:
            assert name in EXERCISED, f"service {name} runs our image but no test exercises it"
        else:
            assert name in THIRD_PARTY, f"service {name}: say in THIRD_PARTY why it is accepted"
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"


def test_worker_settings_follow_the_design() -> None:
    command = services()["worker"]["command"]
    assert "--without-gossip" in command and "--without-mingle" in command
    assert "send.sms" in " ".join(command) and "send.email" in " ".join(command)


# --- settings passed through from .env --------------------------------------------------------


def test_every_setting_reaches_every_app_service() -> None:
    """A setting the code reads but compose does not pass would silently keep its default in
    production (as TWILIO_* once did, stopping start-up when Twilio was chosen)."""
    wanted = setting_env_names()
    assert "TWILIO_ACCOUNT_SID" in wanted and "CAMPAIGNS_SECRET_KEY" in wanted  # sanity
    for name, service in app_services().items():
        environment = service["environment"]
        missing = sorted(wanted - set(environment))
        assert not missing, f"{name} does not pass {missing}"
        for variable in wanted - set(FIXED):
            value = str(environment[variable])
            reference = REFERENCE.fullmatch(value)
            assert reference and reference.group(1) == variable, (
                f"{name}: {variable} should be ${{{variable}:-...}} or ${{{variable}:?...}}, "
                f"not {value!r}"
            )


def test_an_empty_variable_keeps_the_codes_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose passes `${NAME:-}` as an empty string; the code must read it as unset (an empty
    CAMPAIGNS_METRICS_TOKEN would otherwise be a token, a "" port an error)."""
    for variable in list(os.environ):
        if variable in setting_env_names():
            monkeypatch.delenv(variable)
    defaults = Settings().model_dump()
    for variable in setting_env_names():
        monkeypatch.setenv(variable, "")
    assert Settings().model_dump() == defaults


def test_env_example_documents_exactly_what_compose_reads() -> None:
    referenced = {
        match.group(1) for text in strings(compose()) for match in REFERENCE.finditer(text)
    }
    documented = set(env_example())
    assert referenced - documented == set(), "undocumented in .env.example"
    assert documented - referenced == set(), ".env.example sets what compose never reads"
    # One comment line above each variable says what it is.
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert index > 0 and lines[index - 1].startswith("# "), f"no comment above {line}"


def test_no_secret_is_written_in_compose_or_in_the_example() -> None:
    for name, service in services().items():
        for variable, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(variable):
                assert str(value) == "" or REFERENCE.search(str(value)), (name, variable)
    for variable, value in env_example().items():
        if SECRET_NAME.search(variable):
            assert value == "", f".env.example must leave {variable} blank"


def test_the_example_env_starts_the_app_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    """.env.example as shipped stops compose with a message naming each required secret; with
    them filled in, every app service's environment is a valid production configuration."""
    example = env_example()
    with pytest.raises(Missing, match="POSTGRES_PASSWORD"):
        container_env("worker", example)
    filled = example | {
        "POSTGRES_PASSWORD": "a-database-password",
        "CAMPAIGNS_SECRET_KEY": "kT3q9ZfV1xWm7Lr2Bn8YcP5hJd0GsQe4Ua6NiRo-_x",
        "FLOWER_BASIC_AUTH": "ops:another-long-password",
    }
    for service in app_services():
        for variable in list(os.environ):
            if variable.startswith(("CAMPAIGNS_", "TWILIO_", "SENDGRID_")):
                monkeypatch.delenv(variable)
        for variable, value in container_env(service, filled).items():
            monkeypatch.setenv(variable, value)
        settings = Settings()
        assert settings.environment == "production"
        assert settings.broker_url == "redis://redis:6379/0"
        assert settings.database_url.startswith("postgresql://campaigns:a-database-password@")
        assert settings.metrics_token is None  # empty is unset, never an empty token
        assert settings.celery_monitoring is True, service  # Flower sees the workers
        assert len(settings.second_factor_roles) == 4  # every role, as production defaults


# --- healthchecks and restarts ----------------------------------------------------------------


def healthcheck(service: str) -> list[str]:
    test: list[str] = services()[service]["healthcheck"]["test"]
    return test


def test_every_service_has_a_healthcheck_and_a_restart_policy() -> None:
    for name, service in services().items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        if name in ONE_SHOT:
            assert check == {"disable": True} and service["restart"] == "no", name
            continue
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert service.get("restart") == "unless-stopped", name


def test_app_healthchecks_ask_the_right_thing() -> None:
    assert healthcheck("worker")[1:4] == ["campaigns", "health", "worker"]
    assert healthcheck("beat")[1:4] == ["campaigns", "health", "beat"]
    # A dead beat fails /readyz; it must not take the staff UI down with it.
    staff = " ".join(healthcheck("staff"))
    assert "/healthz" in staff and "/readyz" not in staff
    assert "/healthz" in " ".join(healthcheck("web"))
    assert "127.0.0.1:5555/healthcheck" in " ".join(healthcheck("flower"))
    assert "/-/healthy" in " ".join(healthcheck("prometheus"))
    assert "/api/health" in " ".join(healthcheck("grafana"))


# --- Flower -----------------------------------------------------------------------------------


def test_flower_is_on_loopback_behind_basic_auth() -> None:
    flower = services()["flower"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert "--port=5555" in flower["command"]
    # Flower reads FLOWER_BASIC_AUTH itself; compose refuses to start without it.
    reference = REFERENCE.fullmatch(str(flower["environment"]["FLOWER_BASIC_AUTH"]))
    assert reference and reference.group(1) == "FLOWER_BASIC_AUTH"
    assert reference.group(2) == ":?"
    assert not any("basic" in part.lower() for part in flower["command"])  # no secret in argv


# --- the monitoring stack matches deploy/ -----------------------------------------------------


def test_prometheus_finds_what_compose_runs() -> None:
    found = services()
    prometheus = found["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    targets += [
        f"{name}:{sd['port']}"
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    ]
    targets += [
        relabel["replacement"]
        for job in config["scrape_configs"]
        for relabel in job.get("relabel_configs", [])
        if relabel.get("target_label") == "__address__"
    ]
    targets += [
        target
        for manager in config["alerting"]["alertmanagers"]
        for static in manager["static_configs"]
        for target in static["targets"]
    ]
    example = env_example() | {"POSTGRES_PASSWORD": "x", "CAMPAIGNS_SECRET_KEY": "x"}
    example |= {"FLOWER_BASIC_AUTH": "x"}
    for target in targets:
        host, port = target.split(":")
        assert host in found, f"prometheus.yml names {target}, no such service"
        if host in app_services():
            metrics_port = container_env(host, example)["CAMPAIGNS_METRICS_PORT"]
            if host == "staff":  # its /metrics, on its listener; no metrics port of its own
                assert (port, metrics_port) == ("8001", ""), target
            else:  # the container's metrics port
                assert port == metrics_port, target
    assert {t.split(":")[0] for t in targets} >= {"staff", "web", "worker", "beat"}
    assert {t.split(":")[0] for t in targets} >= {"alertmanager", "blackbox"}


def test_grafana_mounts_its_provisioning_and_dashboards() -> None:
    volumes = services()["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    provider = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "campaigns.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in volumes
    grafana_env = services()["grafana"]["environment"]
    assert REFERENCE.fullmatch(grafana_env["GF_SECURITY_ADMIN_PASSWORD"])
    # Required when Grafana starts (not for a plain `up`): the entrypoint refuses an empty one.
    assert "GF_SECURITY_ADMIN_PASSWORD" in " ".join(services()["grafana"]["entrypoint"])


def test_alertmanager_routes_to_receivers_and_inhibits_real_alerts() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"] for r in config["receivers"]}
    routes = [config["route"], *config["route"]["routes"]]
    assert {route["receiver"] for route in routes} <= receivers
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    severities = {
        rule["labels"]["severity"] for group in rules["groups"] for rule in group["rules"]
    }
    routed = {m.split("=")[1].strip('"') for r in routes for m in r.get("matchers", [])}
    assert severities <= routed, "a severity nobody is routed"
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            names = matcher.split("=", 1)[1].lstrip("~").strip('"').split("|")
            assert set(names) <= alerts, matcher
    assert "./deploy/alertmanager:/etc/alertmanager:ro" in services()["alertmanager"]["volumes"]
