"""`campaigns content`: a campaign's live version out to a folder and back in as a draft."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.processes import campaigns, env_with

pytestmark = pytest.mark.slow


def test_export_edit_and_import_a_campaign_folder(tmp_path: Path) -> None:
    env = env_with(CAMPAIGNS_DATABASE_URL=f"sqlite:///{tmp_path / 'content.db'}")
    migrated = campaigns("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "campaign leg-cramps: version 1 from the repository, live" in migrated.stdout

    exported = campaigns("content", "export", "leg-cramps", str(tmp_path / "out"), env=env)
    assert exported.returncode == 0, exported.stderr
    folder = tmp_path / "out" / "leg-cramps"
    sms = folder / "en" / "welcome.sms.j2"
    assert (folder / "campaign.yaml").is_file() and sms.is_file()
    sms.write_text(sms.read_text().replace("thanks for joining", "welcome to"))

    stranger = campaigns("content", "import", str(folder), "--author", "who@x.example", env=env)
    assert stranger.returncode == 2 and "is not an active staff account" in stranger.stderr
    added = campaigns("users", "add", "ana@clinic.example", "--role", "clinician", env=env)
    assert added.returncode == 0, added.stderr
    imported = campaigns(
        "content", "import", str(folder), "--author", "Ana@Clinic.example", env=env
    )
    assert imported.returncode == 0, imported.stderr
    assert "imported as a draft" in imported.stdout

    listed = campaigns("content", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("leg-cramps v2 draft") and "not approved" in lines[0]
    assert "ana@clinic.example" in lines[0]  # the writer, who may not approve it
    assert lines[1].startswith("leg-cramps v1 live") and "approved by repository" in lines[1]

    missing = campaigns("content", "export", "leg-cramps", str(tmp_path), "--version", "9", env=env)
    assert missing.returncode == 1 and "has no version 9" in missing.stderr
    broken = campaigns(
        "content", "import", str(tmp_path / "nowhere"), "--author", "ana@clinic.example", env=env
    )
    assert broken.returncode == 2 and "campaign.yaml: file not found" in broken.stderr
