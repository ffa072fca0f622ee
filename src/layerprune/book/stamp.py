"""A Sphinx extension: every page of the book says which profile, models and commit made it, in its footer, from
the record the runner writes before it builds the HTML (`runner.RUN_RECORD`)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from .runner import RUN_RECORD


def footer(record: dict[str, Any]) -> str:
    """The footer's HTML for a run record: profile, models, commit."""
    models = ", ".join(record.get("models") or []) or "none"
    commit = record.get("commit") or "an unknown commit"
    text = f"Built with the {record.get('profile') or 'unknown'} profile on {models}, from {commit}."
    return f'<p class="layerprune-stamp">{html.escape(text)}</p>'


def stamp_footer(app: Any, config: Any) -> None:
    """Put the footer into the theme's options (`extra_footer`) when the runner left a record."""
    path = Path(app.srcdir) / RUN_RECORD
    if path.is_file():
        config.html_theme_options = {**config.html_theme_options, "extra_footer": footer(json.loads(path.read_text()))}


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", stamp_footer)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
