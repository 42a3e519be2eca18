"""The docs a user reads stay true: every default quoted in docs/engine.md is the configured default, and
nothing in the README or docs/ points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from CONFIG.config_loader import get_cfg

ROOT = Path(__file__).resolve().parents[2]
QUOTED = re.compile(r"`([a-z_]+\.[a-z_0-9.]+)` \(([^)]+)\)")  # `section.key` (default …)


def _number(text: str) -> float | None:
    first = text.split(",")[0].split(" →")[0].strip()
    percent = first.endswith("%")
    first = first.rstrip("%").replace(" ", "").replace("\u202f", "")
    try:
        value = float(first)
    except ValueError:
        return None
    return value / 100 if percent else value


def quoted_defaults() -> list[tuple[str, str]]:
    return QUOTED.findall((ROOT / "docs" / "engine.md").read_text())


def test_the_engine_doc_quotes_many_defaults():
    assert len(quoted_defaults()) >= 40


@pytest.mark.parametrize("key, text", quoted_defaults())
def test_a_default_quoted_in_the_engine_doc_is_the_configured_one(key, text):
    value = get_cfg(key)
    if isinstance(value, list):
        assert [_number(t) for t in text.split(",")] == [float(v) for v in value], (key, text)
    elif isinstance(value, bool) or isinstance(value, str) or value is None:
        assert text.split(" ")[0] == str(value).lower() if value is not None else text.startswith("null"), (key, text)
    else:
        assert _number(text) == pytest.approx(float(value)), (key, text)


def test_nothing_a_user_reads_points_outside_the_repository():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        assert "../shared" not in text and "SPEC.md" not in text and "SPEC §" not in text, path
        for link in re.findall(r"\]\(([^)#]+)", text):
            if not link.startswith(("http://", "https://", "var/")):  # var/: written by make bench, demo
                assert (path.parent / link).exists(), (path, link)
