"""requirements.txt (pip, used by make) and environment.yml (conda) pin the same packages."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"unpinned requirement {line!r}: pin it with =="
        pins[name.lower()] = version
    return pins


def test_requirements_and_environment_pin_the_same_versions():
    requirements = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == requirements
    assert "python=3.11" in env["dependencies"]
    assert requirements["torch"] == "2.14.1" and requirements["torchvision"] == "0.29.1"


def test_installed_versions_match_the_pins():
    from importlib.metadata import version

    for name, pinned in _pins((ROOT / "requirements.txt").read_text().splitlines()).items():
        installed = version(name.split("[")[0])
        assert installed.split("+")[0] == pinned, f"{name}: installed {installed}, pinned {pinned}; run make install"
