import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_environment_yml_has_the_same_pins_as_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"] and "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert [p for p in pip if "==" in p] == _requirements()


def test_every_requirement_is_pinned_and_torch_comes_first():
    pins = _requirements()
    assert all("==" in p for p in pins)
    assert pins[0] == "torch==2.13.0"


def test_every_third_party_import_of_the_package_is_a_declared_dependency():
    import ast
    import sys
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[\[<>=! ]", name)[0].lower().replace("-", "_") for name in project["dependencies"]}
    declared |= {name.lower() for extra in project["optional-dependencies"].values() for name in extra}
    imports_as = {"pyyaml": "yaml", "pillow": "PIL"}
    provided = {imports_as.get(name, name) for name in declared}
    found = set()
    for path in (ROOT / "src" / "layerprune").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    third_party = found - set(sys.stdlib_module_names) - {"layerprune", "__future__"}
    indirect = {"matplotlib_inline", "IPython", "sphinx"}  # come with ipykernel and jupyter-book, not imported alone
    assert third_party - indirect <= provided, sorted(third_party - indirect - provided)
