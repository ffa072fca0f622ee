"""The provenance box every chapter shows: model, data, parameters, package versions, machine, wall time."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
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

    def to_markdown(self) -> str:
        """A collapsible box for the book page."""
        info = self.as_dict()
        rows = "\n".join(f"| `{k}` | `{v!r}` |" for k, v in info["parameters"].items())
        versions = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
        return (
            f"**Provenance** of this chapter ({info['chapter']}): wall time {info['wall_time_s']} s "
            f"on {info['machine']}.\n\n| parameter | value |\n|---|---|\n{rows}\n\nPackages: {versions}.\n"
        )

    def show(self) -> None:
        """Display the box in a notebook."""
        from IPython.display import Markdown, display

        display(Markdown(self.to_markdown()))
