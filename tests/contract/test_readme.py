"""README's "Where things are" names every module, so a newcomer finds each one."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_is_in_the_readme_table() -> None:
    table = (ROOT / "README.md").read_text().split("## Where things are", 1)[1]
    missing = [
        str(path.relative_to(ROOT))
        for folder in ("campaigns", "workers")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name not in {"__init__.py", "__main__.py"}
        and "migrations" not in path.parts
        and path.name.removesuffix(".py") not in table
    ]
    assert not missing, f"not in README's table: {missing}"
