"""README's command examples run as written: each `campaigns ...` line of its shell blocks is
run, in order, against a scratch SQLite database (the enrol example once failed: its phone
number was not quoted). Long-running commands are skipped, each with its reason."""

from __future__ import annotations

import re
import shlex
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Commands that do not finish by themselves, and why they are not run here.
SKIPPED = {
    "serve": "runs the web service until stopped (tests/integration/test_cli.py starts it)",
    "sandbox": "runs the provider stand-ins until stopped",
}


#: The README's due dates stay in the future as the calendar moves: each is read as this far
#: from today (a due date must be between now and 44 weeks ahead to be enrolled).
DUE_IN = timedelta(weeks=26)


def _dated(word: str, scratch: Path) -> str:
    """The word, with a due date (or a CSV file's due dates) moved to DUE_IN from today."""
    due = datetime.now(UTC).date() + DUE_IN
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", word):
        return due.isoformat()
    if word.endswith(".csv") and (ROOT / word).exists():
        text = (ROOT / word).read_text(encoding="utf-8-sig")
        text = re.sub(r"\b\d{4}-\d{2}-\d{2}\b", due.isoformat(), text)
        text = re.sub(r"\b\d{2}/\d{2}/\d{4}\b", due.strftime("%d/%m/%Y"), text)
        moved = scratch / Path(word).name
        moved.write_text(text, encoding="utf-8")
        return str(moved)
    return word


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    commands: list[list[str]] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0].endswith("bin/campaigns"):
                commands.append(words)
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_command_examples() -> None:
    assert len(COMMANDS) >= 6
    assert any(c[1] == "enroll" for c in COMMANDS) and any(c[1] == "import" for c in COMMANDS)


@pytest.mark.slow
def test_each_readme_command_runs_as_written(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CAMPAIGNS_DATABASE_URL": f"sqlite:///{tmp_path / 'readme.db'}",
    }

    def run(words: list[str]) -> subprocess.CompletedProcess[str]:
        argv = [str(ROOT / ".venv" / "bin" / "campaigns")]
        argv += [_dated(word, tmp_path) for word in words[1:]]
        return subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    migrated = run(["campaigns", "migrate"])
    assert migrated.returncode == 0, migrated.stderr
    ran = []
    for words in COMMANDS:
        if words[1] in SKIPPED:
            continue
        done = run(words)
        assert done.returncode == 0, (" ".join(words), done.stdout[-2000:], done.stderr[-2000:])
        ran.append(words[1])
    assert "enroll" in ran and "timeline" in ran
