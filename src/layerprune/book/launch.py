"""A Sphinx extension: the launch buttons (Binder, Colab, JupyterHub) of a chapter open its source notebook.

sphinx-book-theme links each page's own source, which for a chapter is the executed copy in book/generated/: it is
built, not committed, so the repository has no such file. The source notebook in notebooks/ runs the same chapter.
"""

from __future__ import annotations

from typing import Any

EXECUTED = "book/generated/"
SOURCES = "notebooks/"


def source_notebook_links(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """Point every launch button of the page at notebooks/ instead of book/generated/."""
    for group in context.get("header_buttons", []):
        if group.get("label") == "launch-buttons":
            for button in group.get("buttons", []):
                if "url" in button:
                    button["url"] = button["url"].replace(EXECUTED, SOURCES)


def setup(app: Any) -> dict[str, Any]:
    # sphinx-book-theme adds the launch buttons at priority 501; the template renders them after every handler
    app.connect("html-page-context", source_notebook_links, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
