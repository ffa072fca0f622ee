"""The package's shape: module sizes, imports that only point down, a light `--help`, and book parameters that
have one source of truth."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layerprune.book import provenance, runner

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "layerprune"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Layers from the bottom; a module may import its own layer and those below it, never one above.
LAYERS = {
    "_lazy": 0, "_quiet": 0, "errors": 0,
    "validation": 1, "machine": 1, "cache": 1,
    "adapters": 2, "head": 2, "assets": 2, "tiny": 2,
    "models": 3, "data": 3,
    "similarity": 4, "selection": 4, "surgery": 4, "loss": 4, "lens": 4, "prefix": 4,
    "healing": 5, "evaluation": 5,
    "study": 6,
    "speed": 7,
    "book": 8, "course": 8,
    "cli": 9,
}  # fmt: skip


def _unit(path: Path) -> str:
    """The top-level module or subpackage a file belongs to."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported_units(path: Path) -> set[str]:
    """The package's top-level units a file imports (relative imports resolved)."""
    depth = len(path.relative_to(PACKAGE).parts) - 1
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = path.relative_to(PACKAGE).parts[: depth - node.level + 1]
            target = [*parts, *(node.module.split(".") if node.module else [])]
            names = target or [alias.name for alias in node.names]
            found.update([names[0]] if target else names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("layerprune."):
            found.add(node.module.split(".")[1])
    return {unit.removesuffix(".py") for unit in found}


def test_every_unit_has_a_layer_and_imports_only_point_down():
    files = sorted(PACKAGE.rglob("*.py"))
    assert {_unit(path) for path in files} - {"__init__"} == set(LAYERS)
    upward = [
        f"{path.relative_to(PACKAGE)} -> {unit}"
        for path in files
        if _unit(path) != "__init__"
        for unit in _imported_units(path)
        if unit in LAYERS and LAYERS[unit] > LAYERS[_unit(path)]
    ]
    assert not upward


def test_no_module_is_over_500_lines():
    sizes = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert not {name: lines for name, lines in sizes.items() if lines > 500}


def test_help_imports_neither_lm_eval_nor_peft():
    code = (
        "import sys\nfrom layerprune.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('lm_eval', 'peft', 'bitsandbytes', 'matplotlib', 'papermill') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _defaults(notebook: Path) -> dict:
    cell = next(c for c in json.loads(notebook.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    namespace: dict = {}
    exec("".join(cell["source"]), namespace)  # plain literal assignments, checked by the parameters test
    return {name: value for name, value in namespace.items() if not name.startswith("__")}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_defaults_equal_the_default_profile(notebook):
    default = runner.load_profile("default")
    wanted = {**default["common"], **default["chapters"].get(notebook.stem, {})}
    defaults = _defaults(notebook)
    assert {name: defaults[name] for name in wanted if name in defaults} == {
        name: value for name, value in wanted.items() if name in defaults
    }


@pytest.mark.parametrize("profile", runner.PROFILES)
def test_every_profile_key_is_a_real_parameter(profile):
    data = yaml.safe_load((PACKAGE / "book" / "profiles" / f"{profile}.yaml").read_text())
    declared = {n.stem: set(provenance.declared_parameters(n)) for n in NOTEBOOKS}
    assert set(data["chapters"]) <= set(declared)
    for chapter, values in data["chapters"].items():
        assert set(values) <= declared[chapter], chapter
    assert set(data["common"]) <= set().union(*declared.values())


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_the_provenance_table_lists_every_parameter(notebook):
    defaults = _defaults(notebook)
    box = provenance.Provenance.begin(notebook.stem, defaults, root=ROOT)
    assert list(box.parameters) == provenance.declared_parameters(notebook) == list(defaults)
    assert all(f"<code>{name}</code>" in box.parameters_html() for name in defaults)


def test_the_provenance_table_shows_no_path_of_the_machine(tmp_path):
    shown = provenance.shown_value(str(tmp_path / "results" / "default"), tmp_path)
    assert shown == "results/default"
    assert provenance.shown_value("/somewhere/else/results", tmp_path) == "results"


def test_the_architecture_tree_names_every_module_and_only_those():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = text.split("```\nsrc/layerprune/\n", 1)[1].split("```", 1)[0]
    top, sections, current = "", {}, None
    for line in block.splitlines():
        package = re.match(r"  (\w+)/\s", line)
        if package:
            current = package.group(1)
            sections[current] = line
        elif line.startswith("    ") and current:
            sections[current] += line
        else:
            current, top = None, top + line
    assert set(re.findall(r"\b(\w+)\.py\b", top)) == {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert set(sections) == packages
    for package, described in sections.items():
        modules = {p.stem for p in (PACKAGE / package).glob("*.py")} - {"__init__"}
        assert modules <= set(re.findall(r"\w+", described)), (package, modules - set(re.findall(r"\w+", described)))
