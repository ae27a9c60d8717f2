"""`campaigns content ...`: campaign versions from the command line, in the repository's
folder format (campaign.yaml plus <language>/<step>.<part>.j2), so content can be reviewed in
git and brought back as a draft that still needs a clinician's sign-off in the staff UI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from campaigns.rules.catalog import CatalogError

content_app = typer.Typer(
    no_args_is_help=True,
    help="Campaign content versions: list, export to a folder, import a folder as a draft.",
)


@content_app.command("list")
def content_list() -> None:
    """Every campaign's versions: number, state, author, approver and content hash."""
    from campaigns import content_versions
    from campaigns.cli import services

    with services() as built, built.db.session() as session:
        for key in sorted(built.catalog):
            for row in content_versions.versions(session, key):
                approved = (
                    f"approved by {row.approved_by} {row.approved_at:%Y-%m-%d %H:%M}"
                    if row.approved_at
                    else "not approved"
                )
                typer.echo(
                    f"{key} v{row.number} {row.state:<9} by {row.author}, {approved}, "
                    f"hash {row.content_hash[:12]}"
                )


@content_app.command("export")
def content_export(
    campaign: Annotated[str, typer.Argument(help="The campaign's key, e.g. leg-cramps.")],
    folder: Annotated[Path, typer.Argument(help="Where to write <folder>/<campaign>/...")],
    version: Annotated[
        int | None, typer.Option(help="A version number (default: the live one).")
    ] = None,
) -> None:
    """Write a version as a campaign folder (the repository's format)."""
    from campaigns import content_versions
    from campaigns.cli import fail, services
    from campaigns.rules.bundles import write_bundle
    from campaigns.storage.models import CampaignVersion

    with services() as built:
        version_id = None
        if version is not None:
            with built.db.session() as session:
                found = [
                    r for r in content_versions.versions(session, campaign) if r.number == version
                ]
            if not found:
                fail(f"campaign {campaign!r} has no version {version}", 1)
            version_id = found[0].id
        try:
            row, bundle = content_versions.export(built.db, campaign, version_id)
        except CatalogError as exc:
            fail(str(exc), 1)
            raise
        assert isinstance(row, CampaignVersion)
        files = write_bundle(bundle, folder / campaign)
    typer.echo(
        f"{campaign} v{row.number} ({row.state}, hash {row.content_hash[:12]}): "
        f"{len(files)} files in {folder / campaign}"
    )


@content_app.command("import")
def content_import(
    folder: Annotated[Path, typer.Argument(help="A campaign folder with its campaign.yaml.")],
    author: Annotated[
        str,
        typer.Option(
            help="The staff account (email) of whoever wrote these words: they may not "
            "approve them."
        ),
    ],
) -> None:
    """Bring a campaign folder in as a draft; a clinician who is not its author approves it
    in the staff UI before it goes live."""
    from campaigns import content_versions, staff_accounts
    from campaigns.cli import fail, services
    from campaigns.rules.bundles import read_bundle

    with services() as built:
        with built.db.session() as session:
            user = staff_accounts.find(session, author.strip().lower())
            if user is None or user.disabled_at is not None:
                fail(f"--author: {author!r} is not an active staff account")
                raise AssertionError  # unreachable: fail() exits
            writer = staff_accounts.member(session, user).actor
        try:
            bundle = read_bundle(folder)
        except CatalogError as exc:
            fail(str(exc))
            raise
        draft_id = content_versions.import_draft(built.db, bundle, writer, built.clock.now())
    typer.echo(
        f"{bundle.key}: imported as a draft (id {draft_id}, hash {bundle.content_hash()[:12]}); "
        "a clinician approves it on the Campaigns page before it goes live"
    )
