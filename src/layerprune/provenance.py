"""The provenance box every chapter shows: model, data, parameters, package versions, machine, wall time."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from html import escape
from importlib import metadata
from typing import Any

PACKAGES = ("layerprune", "torch", "transformers", "peft", "bitsandbytes", "lm_eval", "accelerate", "papermill")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine() -> str:
    """A one-line description of the machine: CPU, cores, accelerator."""
    import torch

    cpu = platform.processor() or platform.machine()
    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores, {accelerator}, Python {platform.python_version()}"


@dataclass
class Provenance:
    """Started at the top of a chapter, shown at its end."""

    chapter: str
    parameters: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def begin(cls, chapter: str, **parameters: Any) -> Provenance:
        return cls(chapter, parameters)

    def as_dict(self) -> dict[str, Any]:
        """Everything in the box, with the wall time so far in seconds."""
        return {
            "chapter": self.chapter,
            "parameters": self.parameters,
            "packages": package_versions(),
            "machine": machine(),
            "wall_time_s": round(time.perf_counter() - self.started, 1),
        }

    def to_html(self) -> str:
        """A compact box for the book page (HTML, which every notebook viewer and the book render alike)."""
        info = self.as_dict()
        rows = "".join(
            f"<tr><td><code>{escape(k)}</code></td><td><code>{escape(repr(v))}</code></td></tr>"
            for k, v in info["parameters"].items()
        )
        versions = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
        return (
            f"<div class='layerprune-provenance'><p><strong>Provenance</strong> of this chapter "
            f"({escape(info['chapter'])}): wall time {info['wall_time_s']} s on {escape(info['machine'])}.</p>"
            f"<table><thead><tr><th>parameter</th><th>value</th></tr></thead><tbody>{rows}</tbody></table>"
            f"<p>Packages: {escape(versions)}.</p></div>"
        )

    def show(self) -> None:
        """Display the box in a notebook."""
        from IPython.display import HTML, display

        display(HTML(self.to_html()))
