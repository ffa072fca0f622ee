"""The book: running the chapters (`runner`, `reuse`), rendering the study's results (`tables`, `plots`, `prose`,
`ledger`, `provenance`) and checking the built pages (`table_check`, `pages`). The study itself (experiments,
statistics, claims) is `layerprune.study`. Modules load on first use."""

from .._lazy import lazy_attributes

_NAMES = {
    "PROFILES": "runner",
    "BookRun": "runner",
    "build_html": "runner",
    "chapter_parameters": "runner",
    "chapters": "runner",
    "load_parameter_file": "runner",
    "load_profile": "runner",
    "measured_budget": "runner",
    "budget_note": "runner",
    "parse_overrides": "runner",
    "run_book": "runner",
    "Provenance": "provenance",
    "check_tables": "table_check",
    "check_pages": "pages",
}
_MODULES = (
    "launch",
    "ledger",
    "pages",
    "plots",
    "prose",
    "provenance",
    "reuse",
    "runner",
    "stamp",
    "table_check",
    "tables",
)
__getattr__ = lazy_attributes(__name__, _MODULES, _NAMES)
__all__ = sorted(_NAMES)
