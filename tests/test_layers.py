"""The packages form layers (README, Layout): imports point down only, so there is no import circle."""

import ast
import tomllib
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[1]
# package -> layer: the ground, the plug-ins, the apps, the command line
LAYERS = {"core": 0, "data": 1, "models": 1, "strategies": 1, "clients": 2, "server": 2, "experiments": 3}


def imports(path: Path) -> set[str]:
    """Top-level SpikeFed packages a module imports at run time (``if TYPE_CHECKING:`` blocks excluded)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
    return found & set(LAYERS)


def test_imports_point_down_only():
    wrong = []
    for package, layer in LAYERS.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for target in imports(path) - {package}:
                # a plug-in never imports another plug-in, an app never the other app
                if LAYERS[target] >= layer:
                    wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert wrong == []


def test_every_packaged_package_has_a_layer():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packaged = {name.split(".")[0] for name in setuptools.find_packages(str(ROOT), exclude=find["exclude"])}
    assert packaged == set(LAYERS)


def test_the_apps_reach_workloads_only_through_the_registry():
    """Server-side work of a workload (e.g. DDA's distillation) is the workload's hook, so
    neither app imports a workload's own modules."""
    from models import WORKLOADS

    own = {type(w).__module__ for w in WORKLOADS.values()} | {"models.dda"}
    wrong = [f"{path.relative_to(ROOT)}: {node.module}" for app in ("server", "clients")
             for path in sorted((ROOT / app).rglob("*.py")) for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.ImportFrom) and any((node.module or "").startswith(m) for m in own)]
    assert wrong == []


def test_core_needs_no_torch():
    """core/ is the ground every layer stands on, the server's strategies included: numpy only."""
    def top_level(path: Path) -> set[str]:
        nodes = list(ast.walk(ast.parse(path.read_text())))
        return ({n.module.split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom) and n.module}
                | {a.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for a in n.names})

    assert [str(p.relative_to(ROOT)) for p in sorted((ROOT / "core").rglob("*.py"))
            if {"torch", "spikingjelly"} & top_level(p)] == []
