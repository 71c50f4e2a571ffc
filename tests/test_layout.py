"""The layout's one direction of imports (README "Layout"), checked on the source with ``ast``.

entry scripts (train.py, evaluate.py, predict.py, app.py) are imported by nothing; webui/scripts/benchmarks/tests
may use any library; inference/evaluation/runtime use the layers below (evaluation also inference and runtime);
lightning_modules/datamodules/callbacks/weights use each other and the bottom; archs/losses/ops/synthesis/metrics
use only the bottom (and the two weight-file readers that import no project package).
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENTRY = {"train", "evaluate", "predict", "app"}
TOP = {"webui", "scripts", "benchmarks", "tests"}
SERVICE = {"inference", "evaluation", "runtime"}
MIDDLE = {"lightning_modules", "datamodules", "callbacks", "weights"}
BOTTOM = {"archs", "losses", "ops", "synthesis", "metrics"}
SHARED = {"tv_compat"}  # the torchvision shim every entry point and test loads first
# Leaf modules of weights/ that import no project package: the pretrained-file loader (used by HED, BiSeNet, VGG,
# LPIPS, FID) and the reader of data files that registry packages ship.
BOTTOM_OK = {"weights.pretrained", "weights.registry_packages"}
SERVICE_OK = {"evaluation": {"inference", "runtime"}, "inference": set(), "runtime": set()}
ENTRY_MAX_LINES = 150


def _sources():
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0].startswith(".") or rel.parts[0] in {"outputs", "logs", "multirun"}:
            continue
        yield rel, ast.parse(path.read_text(), filename=str(rel))


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _owner(rel: Path) -> str:
    return rel.stem if len(rel.parts) == 1 else rel.parts[0]


def _allowed(owner: str, module: str) -> bool:
    top = module.split(".")[0]
    if top in SHARED or owner in TOP:
        return top not in ENTRY
    if top in ENTRY:
        return False
    if owner in ENTRY:
        return True
    if owner in SERVICE:
        return top in MIDDLE | BOTTOM or top in SERVICE_OK[owner] or top == owner
    if owner in MIDDLE:
        return top in MIDDLE | BOTTOM
    if owner in BOTTOM:
        return top in BOTTOM or any(module == m or module.startswith(m + ".") for m in BOTTOM_OK)
    return True  # third-party and standard library


def test_every_package_is_placed_in_a_layer():
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= TOP | SERVICE | MIDDLE | BOTTOM, packages - (TOP | SERVICE | MIDDLE | BOTTOM)


def test_imports_go_one_way_and_nothing_imports_an_entry_script():
    project = ENTRY | TOP | SERVICE | MIDDLE | BOTTOM | SHARED
    wrong = []
    for rel, tree in _sources():
        owner = _owner(rel)
        for module in _imports(tree):
            if module.split(".")[0] in project and not _allowed(owner, module):
                wrong.append(f"{rel} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_bottom_leaf_readers_import_no_project_package():
    project = ENTRY | TOP | SERVICE | MIDDLE | BOTTOM
    for name in BOTTOM_OK:
        tree = ast.parse((REPO / (name.replace(".", "/") + ".py")).read_text())
        assert not [m for m in _imports(tree) if m.split(".")[0] in project], name


@pytest.mark.parametrize("script", sorted(ENTRY))
def test_entry_scripts_are_thin(script):
    lines = (REPO / f"{script}.py").read_text().count("\n")
    assert lines <= ENTRY_MAX_LINES, f"{script}.py has {lines} lines; its logic belongs in a library package"


def test_archs_holds_networks_and_the_registry_only():
    for path in sorted((REPO / "archs").glob("*.py")):
        if path.name in {"__init__.py", "registry.py"}:
            continue
        tree = ast.parse(path.read_text())
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
        assert classes, f"archs/{path.name} defines no network class"
        assert not any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body), (
            f"archs/{path.name} is a command-line tool (scripts/ holds those)"
        )
