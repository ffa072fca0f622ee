"""The provenance of a chapter: the parameters it ran with (every one its `parameters` cell declares, read from
the notebook, never retyped), package versions, machine and wall time."""

from __future__ import annotations

import ast
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..machine import machine_line

PACKAGES = ("layerprune", "torch", "transformers", "peft", "bitsandbytes", "lm_eval", "accelerate", "papermill")
PARAMETERS_TAG = "parameters"


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def source_notebook(chapter: str, root: str | Path = ".") -> Path:
    """The chapter's source notebook, from the book's root (papermill's working directory) or from notebooks/
    itself (a reader's Jupyter)."""
    for candidate in (Path(root) / "notebooks" / f"{chapter}.ipynb", Path(root) / f"{chapter}.ipynb"):
        if candidate.is_file():
            return candidate
    raise InvalidInputError(f"cannot find the source notebook of chapter {chapter!r} (notebooks/{chapter}.ipynb)")


def declared_parameters(notebook: str | Path) -> list[str]:
    """The names the notebook's cell tagged `parameters` assigns, in order."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    source = next(
        ("".join(c["source"]) for c in cells if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])), None
    )
    if source is None:
        raise InvalidInputError(f"{notebook} has no cell tagged {PARAMETERS_TAG!r}")
    names = [
        target.id
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    ]
    return list(dict.fromkeys(names))


def shown_value(value: Any, root: Path) -> Any:
    """A parameter as the page shows it: an absolute path inside the book's root becomes relative to it, so no
    page publishes the path of the machine that built it."""
    if isinstance(value, str) and Path(value).is_absolute():
        try:
            return Path(value).relative_to(root.resolve()).as_posix()
        except ValueError:
            return Path(value).name
    return value


@dataclass
class Provenance:
    """Started at the top of a chapter: `show_parameters()` there, `show()` at its end."""

    chapter: str
    parameters: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def begin(cls, chapter: str, namespace: Mapping[str, Any], root: str | Path = ".") -> Provenance:
        """The values in `namespace` (the notebook's globals) of every parameter the chapter declares."""
        names = declared_parameters(source_notebook(chapter, root))
        missing = [name for name in names if name not in namespace]
        if missing:
            raise InvalidInputError(f"chapter {chapter}: parameters {missing} are not defined")
        base = Path(root)
        return cls(chapter, {name: shown_value(namespace[name], base) for name in names})

    def as_dict(self) -> dict[str, Any]:
        """Everything in the box, with the wall time so far in seconds."""
        return {
            "chapter": self.chapter,
            "parameters": self.parameters,
            "packages": package_versions(),
            "machine": machine_line(),
            "wall_time_s": round(time.perf_counter() - self.started, 1),
        }

    def parameters_html(self) -> str:
        """The parameters as a compact two-column table, folded under a summary line."""
        rows = "".join(
            f"<tr><td><code>{escape(k)}</code></td><td><code>{escape(repr(v))}</code></td></tr>"
            for k, v in self.parameters.items()
        )
        return (
            f"<details class='layerprune-parameters'><summary>This chapter ran with {len(self.parameters)} "
            f"parameters (open to see them; change any with <code>layerprune book -p NAME VALUE</code>)</summary>"
            f"<table><thead><tr><th>parameter</th><th>value</th></tr></thead><tbody>{rows}</tbody></table></details>"
        )

    def to_html(self) -> str:
        """The closing box: wall time, machine and package versions (the parameters are at the top)."""
        info = self.as_dict()
        versions = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
        return (
            f"<div class='layerprune-provenance'><p><strong>Provenance</strong> of this chapter "
            f"({escape(info['chapter'])}): wall time {info['wall_time_s']} s on {escape(info['machine'])}.</p>"
            f"<p>Packages: {escape(versions)}.</p></div>"
        )

    def show_parameters(self) -> None:
        """Display the parameters table in a notebook."""
        _display(self.parameters_html())

    def show(self) -> None:
        """Display the closing box in a notebook."""
        _display(self.to_html())


def _display(html: str) -> None:
    from IPython.display import HTML, display

    display(HTML(html))
