"""The book: running the chapters (`runner`), the chapters' cached experiments, tables, figures and provenance,
and the checks of the built pages (`table_check`, `pages`). Modules load on first use."""

from .._lazy import lazy_attributes

_NAMES = {
    "PROFILES": "runner",
    "BookRun": "runner",
    "build_html": "runner",
    "chapter_parameters": "runner",
    "chapters": "runner",
    "load_parameter_file": "runner",
    "load_profile": "runner",
    "parse_overrides": "runner",
    "run_book": "runner",
    "Provenance": "provenance",
    "SweepResult": "grid",
    "check_tables": "table_check",
    "check_pages": "pages",
}
_MODULES = (
    "claims",
    "experiments",
    "launch",
    "pages",
    "plots",
    "prose",
    "provenance",
    "runner",
    "grid",
    "statistics",
    "table_check",
    "tables",
)
__getattr__ = lazy_attributes(__name__, _MODULES, _NAMES)
__all__ = sorted(_NAMES)
