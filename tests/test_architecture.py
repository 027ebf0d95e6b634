"""The house rules, checked on the source: imports point down between rooms, no module imports
itself back through others, no Streamlit outside the UI, small modules, a fast CLI start and
one public face whose names all resolve."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lightviz

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lightviz"
# room -> rooms it may import (besides itself); the top package and __main__ are the front door
ALLOWED = {
    "core": set(),
    "io": {"core"},
    "analysis": {"core", "io"},
    "recover": {"core", "io"},
    "plots": {"core", "analysis", "recover"},
    "cli": {"core", "io", "analysis", "recover", "plots"},
    "ui": {"core", "io", "analysis", "recover", "plots"},
}
MAX_LINES = 500
HEAVY_FOR_HELP = ("torch", "torchvision", "pandas", "plotly", "numpy", "sklearn", "streamlit")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every lightviz module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("lightviz"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightviz"):
            for alias in node.names:  # `from lightviz.io import zoo` imports the module lightviz.io.zoo
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists() else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target in _imports(path):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name and target in modules:
                targets.add(target)
        graph[name] = targets
    return graph


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_every_module_lives_in_a_room():
    loose = sorted(name for name in _graph() if _room(name) is None and name not in ("lightviz", "lightviz.__main__"))
    assert loose == [], f"modules outside the rooms {sorted(ALLOWED)}: {loose}"


def test_imports_point_down_between_rooms():
    wrong = []
    for module, targets in _graph().items():
        room = _room(module)
        for target in targets:
            other = _room(target)
            if room and other and other != room and other not in ALLOWED[room]:
                wrong.append(f"{module} -> {target}")
            if room and target == "lightviz":
                wrong.append(f"{module} -> lightviz (the public face is for users; import the defining module)")
    assert wrong == [], "imports that point the wrong way:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_the_direction_test_catches_a_wrong_import(tmp_path, monkeypatch):
    """The checker itself: a core module importing the UI is reported."""
    fake = tmp_path / "lightviz" / "core"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from lightviz.ui import state\n")
    (tmp_path / "lightviz" / "ui").mkdir()
    (tmp_path / "lightviz" / "ui" / "state.py").write_text("from lightviz.core import bad\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "lightviz")
    with pytest.raises(AssertionError, match="lightviz.core.bad -> lightviz.ui.state"):
        test_imports_point_down_between_rooms()
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()


def test_streamlit_only_in_the_ui():
    offenders = [str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py")
                 if "streamlit" in {name.split(".")[0] for name in _all_imports(path)}
                 and _room(_module_name(path)) != "ui"]
    assert offenders == []


def _all_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_module_over_500_lines():
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "pages").glob("*.py"), ROOT / "app.py"]
    long = {str(path.relative_to(ROOT)): n for path in files if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these by concept: {long}"


def test_every_room_says_what_it_holds_and_may_import():
    for room in ALLOWED:
        doc = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text()))
        assert doc and "import" in doc, f"lightviz/{room}/__init__.py needs a docstring saying what it may import"


def test_public_face_resolves_every_name():
    for name in lightviz.__all__:
        assert getattr(lightviz, name) is not None
    assert {"QuantSpec", "PruneSpec", "Plan", "LayerConfig", "fake_quantize", "prune_mask", "Engine", "uniform_plan",
            "load_model", "eval_data_for"} <= set(lightviz.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lightviz.nope  # noqa: B018


@pytest.mark.parametrize("argv", [["--help"], ["models"], ["models", "--json"]])
def test_cli_help_and_models_import_nothing_heavy(argv):
    code = ("import sys, runpy; sys.argv = ['lightviz', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('lightviz', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY_FOR_HELP!r} if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr
    assert done.stdout


def test_catalog_lists_what_torchvision_has():
    import torchvision

    from lightviz.io.catalog import SAMPLE_DESCRIPTIONS, TORCHVISION_CLASSIFIERS
    from lightviz.io.zoo import SAMPLE_MODELS, list_torchvision_models

    assert list(TORCHVISION_CLASSIFIERS) == list_torchvision_models()
    assert list(TORCHVISION_CLASSIFIERS) == torchvision.models.list_models(module=torchvision.models)
    assert list(SAMPLE_DESCRIPTIONS) == list(SAMPLE_MODELS)

