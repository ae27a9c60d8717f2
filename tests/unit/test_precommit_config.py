"""The pre-commit hooks run the project's own tools from .venv: nothing to download at commit."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def hooks() -> list[dict[str, Any]]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    assert isinstance(config, dict)
    found: list[dict[str, Any]] = []
    for repo in config["repos"]:
        assert repo["repo"] == "local", repo  # a remote repo would be cloned at commit time
        found.extend(repo["hooks"])
    return found


def test_the_hooks_cover_what_make_lint_checks() -> None:
    assert [h["id"] for h in hooks()] == ["ruff-check", "ruff-format", "mypy", "lint-imports"]


def test_every_hook_runs_an_installed_tool_from_the_project_venv() -> None:
    for hook in hooks():
        assert hook["language"] == "system", hook  # runs `entry` as is, installs nothing
        executable = shlex.split(hook["entry"])[0]
        assert executable.startswith(".venv/bin/"), hook
        path = ROOT / executable
        assert path.is_file() and os.access(path, os.X_OK), f"{path} is missing: make install"
