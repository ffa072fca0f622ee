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
