"""The monitoring artefacts in deploy/: Prometheus's alert rules and scrape config, checked and
unit-tested by promtool (Debian's prometheus package, installed by scripts/ensure-promtool,
which `make test` runs), and the Grafana dashboard and its provisioning.

Every alert links to its runbook in docs/operations.md, is shown firing and quiet by
alerts.test.yml, and, like every dashboard query, names only metrics of the contract below.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from campaigns import gauges, metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts.test.yml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "campaigns.json"
OPERATIONS = ROOT / "docs" / "operations.md"
RUNBOOKS = "https://github.com/santi-clinic/campaigns/blob/main/docs/operations.md#"
TOKEN_FILE = "/etc/prometheus/metrics-token"

# The metric contract: every series name the processes (campaigns.metrics) and the staff
# listener's /metrics (campaigns.gauges) expose, with its type (a histogram's series are its
# _bucket, _sum and _count). The rules and the dashboard are checked against it.
CONTRACT: dict[str, str] = metrics.contract() | dict.fromkeys(gauges.NAMES, "gauge")
# Series Prometheus makes itself (up) and blackbox_exporter's, for the optional public URL probe.
OUTSIDE_THE_CONTRACT = frozenset({"up", "probe_success", "probe_ssl_earliest_cert_expiry"})


def series_names(contract: dict[str, str]) -> frozenset[str]:
    """The series names a contract's metrics expose."""
    names: set[str] = set()
    for name, kind in contract.items():
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return frozenset(names)


ALLOWED = series_names(CONTRACT) | OUTSIDE_THE_CONTRACT

# Grafana's interval variables, as a query's range; anything else starting with $ is refused.
GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2"}
)


# --- promtool --------------------------------------------------------------------------------


def promtool(*args: str) -> str:
    """Runs promtool; a missing promtool fails (CI must check the rules), never skips."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: run scripts/ensure-promtool (make test does), "
            "which installs Debian's prometheus package"
        )
    done = subprocess.run([found, *args], capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_alert_rules_pass_promtool_check() -> None:
    output = promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in output


def test_alert_rules_pass_their_unit_tests() -> None:
    promtool("test", "rules", str(ALERT_TESTS))


def test_scrape_config_passes_promtool_check(tmp_path: Path) -> None:
    # promtool checks the token file exists: point the config at a copy beside a dummy one.
    for path in PROMETHEUS.glob("*.yml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "metrics-token").write_text("not-the-real-token\n")
    config = tmp_path / "prometheus.yml"
    text = config.read_text()
    assert TOKEN_FILE in text
    config.write_text(text.replace(TOKEN_FILE, str(tmp_path / "metrics-token")))
    output = promtool("check", "config", str(config))
    assert "1 rule files found" in output, output


# --- the alert rules -------------------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule
    ]


def alert_names() -> set[str]:
    return {str(rule["alert"]) for rule in alert_rules()}


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a document's headings: lower case, punctuation dropped, spaces
    as hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        found = re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)
        if found:
            anchors.add(re.sub(r"[^\w\- ]", "", found.group(1).lower()).replace(" ", "-"))
    return anchors


def test_the_rules_have_the_alerts_the_issue_asks_for() -> None:
    assert alert_names() >= {
        "CampaignsBeatSilent",
        "CampaignsWorkerQueueNotDraining",
        "CampaignsUpkeepJobLate",
        "CampaignsDueLagHigh",
        "CampaignsSendingStuck",
        "CampaignsUnknownResults",
        "CampaignsProviderErrorRatio",
        "CampaignsChannelHalted",
        "CampaignsRedAlertUnacknowledged",
        "CampaignsWebhook5xx",
        "CampaignsHorizonBacklog",
        "CampaignsReadinessDown",
        "CampaignsTargetDown",
        "CampaignsPublicCertificateExpiring",
    }


def test_every_alert_has_a_severity_and_says_what_to_do() -> None:
    for rule in alert_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"page", "ticket"}, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert str(annotations.get(key, "")).strip(), (name, key)


def test_every_runbook_link_is_a_heading_in_the_operator_guide() -> None:
    anchors = heading_anchors(OPERATIONS.read_text())
    for rule in alert_rules():
        name, url = rule["alert"], rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOKS), (name, url)
        anchor = url.removeprefix(RUNBOOKS)
        # Each alert's runbook is the section named after it ("### CampaignsBeatSilent").
        assert anchor == name.lower(), (name, url)
        assert anchor in anchors, f"{name}: docs/operations.md has no heading for #{anchor}"


def test_the_anchor_reader_follows_github() -> None:
    assert heading_anchors("## Alerts and runbooks\n### CampaignsBeatSilent\ntext # not") == {
        "alerts-and-runbooks",
        "campaignsbeatsilent",
    }


def test_every_alert_is_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = alert_names()
    # A misspelt alert name "passes" any test that expects nothing.
    strangers = (fired | quiet) - names
    assert not strangers, f"tests for alerts that do not exist: {sorted(strangers)}"
    assert not names - fired, f"never shown firing: {sorted(names - fired)}"
    assert not names - quiet, f"never shown quiet: {sorted(names - quiet)}"


# --- metric names in PromQL ------------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: every identifier that is not a function
    (followed by "("), a keyword, a label (in {...} or a by/on/... list) or inside a string."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = re.finditer(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {m.group(1) for m in found if m.group(1).lower() not in PROMQL_KEYWORDS}


def test_the_metric_name_reader_reads_promql() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (route, le) (rate(campaigns_http_request_seconds_bucket"
        '{route=~"/webhooks/.*"}[5m]))) > on(name) group_left() 3 * max by (name) '
        '(campaigns_job_period_seconds) or absent(up{job="x"}) unless time() - 1e3 > bool 14'
    )
    assert metric_names(expr) == {
        "campaigns_http_request_seconds_bucket",
        "campaigns_job_period_seconds",
        "up",
    }


def rule_exprs() -> Iterator[tuple[str, str]]:
    for rule in alert_rules():
        yield str(rule["alert"]), str(rule["expr"])


def test_the_rules_use_only_metrics_of_the_contract() -> None:
    for name, expr in rule_exprs():
        unknown = metric_names(expr) - ALLOWED
        assert not unknown, f"{name} uses metrics outside the contract: {sorted(unknown)}"


# --- the Grafana dashboard -------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return found


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    for panel in panels():
        for target in panel.get("targets", []):
            yield f"{panel['title']} {target['refId']}", str(target["expr"])


def as_promql(expr: str) -> str:
    for variable, duration in GRAFANA_RANGES.items():
        expr = expr.replace(variable, duration)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_dashboard_has_the_keys_grafana_needs() -> None:
    board = dashboard()
    for key in ("uid", "title", "schemaVersion", "panels", "templating", "time", "version"):
        assert key in board, key
    assert board["uid"] == "campaigns-overview"  # fixed: links and provisioning rely on it
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_dashboard_panels_are_well_formed_and_do_not_overlap() -> None:
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    taken: dict[tuple[int, int], str] = {}
    for panel in panels():
        title = panel.get("title", "")
        assert title and panel.get("type"), panel.get("id")
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("h", "w", "x", "y")), title
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, title
        for row in range(pos["y"], pos["y"] + pos["h"]):
            for column in range(pos["x"], pos["x"] + pos["w"]):
                assert (row, column) not in taken, f"{title} overlaps {taken[row, column]}"
                taken[row, column] = title
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        targets = panel.get("targets", [])
        assert targets, f"{title} shows nothing"
        refs = [target["refId"] for target in targets]
        assert len(refs) == len(set(refs)), title
        for target in targets:
            assert target["datasource"] == panel["datasource"], title
            assert str(target.get("expr", "")).strip(), title


def test_dashboard_queries_use_only_metrics_of_the_contract() -> None:
    for where, expr in dashboard_exprs():
        unknown = metric_names(as_promql(expr)) - ALLOWED
        assert not unknown, f"{where} uses metrics outside the contract: {sorted(unknown)}"


def test_every_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    used = set().union(
        *(metric_names(expr) for _, expr in rule_exprs()),
        *(metric_names(as_promql(expr)) for _, expr in dashboard_exprs()),
    )
    unused = [name for name in CONTRACT if not series_names({name: CONTRACT[name]}) & used]
    assert not unused, f"metrics neither shown nor alerted on: {unused}"


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    # promtool parses a rules file's expressions: make each query a recording rule.
    rules = [
        {"record": f"dashboard:query_{number}", "expr": as_promql(expr)}
        for number, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = promtool("check", "rules", str(path))
    assert f"{len(rules)} rules found" in output, output


def test_grafana_provisioning_loads_the_dashboard_from_prometheus() -> None:
    sources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True  # the dashboard's data source variable picks it
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "campaigns.yml")
    (provider,) = providers["providers"]
    # docker-compose.yml mounts deploy/grafana/dashboards there.
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_make_test_installs_promtool() -> None:
    makefile = (ROOT / "Makefile").read_text()
    test_target = re.search(r"^test:(.*)$", makefile, re.MULTILINE)
    assert test_target and "promtool" in test_target.group(1).split()
    assert "scripts/ensure-promtool" in makefile
