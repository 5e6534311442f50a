"""The install claims one top-level import name, ``mobilenetv2_dense``, and coexists with a user's own packages.

Run in subprocesses from unrelated temporary folders, as a user's project would import the library.
"""

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mobilenetv2_dense"


def run_python(code: str, cwd: Path, env: dict | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_project_with_its_own_backbone_and_tasks_imports_ours_without_collision(tmp_path):
    """The reuse case of docs/backbone.md: a detection repo with its own ``backbone/``, ``heads.py`` and ``tasks/``
    packages."""
    for name in ("backbone", "tasks"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"OWNER = 'their {name}'\n")
    (tmp_path / "heads.py").write_text("OWNER = 'their heads'\n")
    out = run_python(
        "import json, backbone, heads, tasks, torch\n"
        "from mobilenetv2_dense.backbone import mobilenet_v2\n"
        "import mobilenetv2_dense.heads, mobilenetv2_dense.commands.cli\n"
        "model = mobilenet_v2(out_features=['stage3', 'stage7'])\n"
        "features = model(torch.zeros(1, 3, 64, 64))\n"
        "print(json.dumps({'theirs': [backbone.OWNER, heads.OWNER, tasks.OWNER],\n"
        "                  'ours': mobilenetv2_dense.heads.__file__,\n"
        "                  'shapes': {k: list(v.shape) for k, v in features.items()}}))\n",
        cwd=tmp_path)
    report = json.loads(out)
    assert report["theirs"] == ["their backbone", "their heads", "their tasks"]
    assert Path(report["ours"]).resolve() == REPO / "heads" / "__init__.py"
    assert report["shapes"] == {"stage3": [1, 32, 8, 8], "stage7": [1, 320, 2, 2]}  # Table 2: 32 ch at /8, 320 at /32


def test_installed_distribution_has_one_top_level_name(tmp_path):
    """The environment's install (``make install``: editable) maps only ``mobilenetv2_dense`` to this project."""
    out = run_python(
        "import json, importlib.metadata as md\n"
        "names = sorted(n for n, dists in md.packages_distributions().items() if 'mobilenetv2-dense' in dists)\n"
        "print(json.dumps(names))\n", cwd=tmp_path)
    assert json.loads(out) == [PACKAGE]


def test_console_script_runs_from_any_directory(tmp_path):
    script = Path(sys.executable).parent / "mobilenetv2-dense"
    assert script.is_file(), f"{script} missing: install the project (make install, or pip install -e .)"
    config = REPO / "configs" / "ssdlite_shapes_demo.yaml"
    result = subprocess.run([str(script), "fit", "--config", str(config), "--print_config"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"class_path: {PACKAGE}.tasks.detection.DetectionTask" in result.stdout


@pytest.mark.slow
def test_wheel_install_has_one_top_level_name_and_every_module_imports(tmp_path):
    """A regular (wheel) install: one top-level name, the console script, and every module importable from it."""
    wheels, site, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    # built from a copy: setuptools leaves build/ in the source tree, whose stale files would enter later wheels
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "data", "runs", "build", "*.egg-info",
                                                                "__pycache__", "lightning_logs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("mobilenetv2_dense-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
        (entry_points,) = [n for n in files if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    top_level = {name.split("/")[0] for name in files if ".dist-info/" not in name}
    assert top_level == {PACKAGE}
    assert "mobilenetv2-dense = mobilenetv2_dense.__main__:main" in scripts
    modules = sorted(name[:-3].replace("/", ".").removesuffix(".__init__") for name in files if name.endswith(".py"))
    folders = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"benchmarks", PACKAGE}
    in_repo = {".".join((PACKAGE, *p.relative_to(REPO).with_suffix("").parts)).removesuffix(".__init__")
               for folder in folders for p in (REPO / folder).rglob("*.py")}
    assert in_repo <= set(modules), f"missing from the wheel (pyproject.toml packages): {in_repo - set(modules)}"

    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    out = run_python(
        "import importlib, json, sys\n"
        f"modules = {modules!r}\n"
        "files = [importlib.import_module(m).__file__ for m in modules]\n"
        "print(json.dumps(files))\n",
        cwd=tmp_path, env={"PYTHONPATH": str(site)})
    files = json.loads(out)
    assert len(files) == len(modules) > 40
    assert all(Path(f).resolve().is_relative_to(site.resolve()) for f in files)


LIBRARY_FOLDERS = ("backbone", "heads", "models", "datasets", "tasks", "deploy", "pictures", "commands")


def test_every_library_folder_is_mapped_in_pyproject():
    """A sub-package missing from ``[tool.setuptools] packages`` would be absent from wheels and editable installs."""
    import tomllib

    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join((PACKAGE, *p.parent.relative_to(REPO).parts))
               for top in LIBRARY_FOLDERS for p in (REPO / top).rglob("__init__.py")}
    assert len(folders) >= len(LIBRARY_FOLDERS)
    assert folders - set(settings["packages"]) == set(), "add these to pyproject.toml's packages"
    assert {f"{PACKAGE}.{top}": top for top in LIBRARY_FOLDERS}.items() <= settings["package-dir"].items()


@pytest.mark.parametrize("folder", LIBRARY_FOLDERS)
def test_a_folder_imported_as_a_top_level_name_names_the_package(folder):
    """From the repository root ``import backbone`` would load a second copy of every class; it fails instead."""
    result = subprocess.run([sys.executable, "-c", f"import {folder}"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert f"import {PACKAGE}.{folder}, not {folder}" in result.stderr


def _library_imports():
    """``(file, node)`` for every import statement in the library folders."""
    for top in LIBRARY_FOLDERS:
        for file in sorted((REPO / top).rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    yield file, node


def _resolves(file: Path, node: ast.ImportFrom) -> bool:
    """Whether a relative import names a module file or package folder of this tree."""
    base = file.parent
    for _ in range(node.level - 1):
        base = base.parent
    target = base.joinpath(*node.module.split(".")) if node.module else base
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def test_library_imports_itself_relatively_and_every_relative_import_resolves_in_the_tree():
    """Inside the package, imports are relative (as torchvision's and timm's): each one names a file or folder of
    this tree, so a reader, an editor and a static checker follow it from the files alone."""
    absolute, unresolved, relative = [], [], 0
    for file, node in _library_imports():
        where = f"{file.relative_to(REPO)}:{node.lineno}"
        if isinstance(node, ast.ImportFrom) and node.level:
            relative += 1
            if not _resolves(file, node):
                unresolved.append(f"{where} from {'.' * node.level}{node.module or ''}")
            continue
        modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        # `import mobilenetv2_dense` (the version, in the export sidecar) is the package itself, not a folder
        if any(m.startswith(PACKAGE + ".") for m in modules):
            absolute.append(where)
    assert relative > 100
    assert absolute == [], "import these relatively"
    assert unresolved == []


def test_static_checker_resolves_every_library_import():
    """``make lint``'s basedpyright pass (pyproject.toml ``[tool.basedpyright]``): every import of the library, ours
    and third-party, resolves without running the code."""
    checker = Path(sys.executable).parent / "basedpyright"
    assert checker.is_file(), f"{checker} missing: install requirements.txt (make install)"
    result = subprocess.run([str(checker), "--pythonpath", sys.executable], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "0 errors" in result.stdout


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imports_run_down_the_floors():
    """backbone -> heads -> models -> deploy -> tasks -> commands, datasets beside models: no arrow runs back up."""
    graph = _import_graph()
    edges = graph.folder_imports()
    assert {("models", "backbone"), ("models", "heads"), ("tasks", "datasets"), ("commands", "tasks")} <= set(edges)
    assert graph.upward(edges) == []
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "import_graph.py"), "--check"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("flowchart BT") and "tasks -->" in result.stdout


def test_import_graph_flags_an_import_that_runs_up(tmp_path):
    graph = _import_graph()
    for folder in graph.FLOORS:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "heads" / "loss.py").write_text("from ..models.ssdlite import SSDLite\nfrom ..backbone import x\n")
    edges = graph.folder_imports(tmp_path)
    assert edges == {("heads", "models"): 1, ("heads", "backbone"): 1}
    assert graph.upward(edges) == [("heads", "models")]
