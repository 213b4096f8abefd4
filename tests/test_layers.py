"""The package's dependency rule, read from the source with ``ast``.

Layers, bottom to top: the shared base (``lensllm.errors``, ``lensllm.fileio``), the
numerical core (``lensllm.core``, re-exported by ``lensllm``), the Hugging Face layer
(``lensllm.hf``), the offline zoo builder (``lensllm.zoo``), the run orchestration
(``lensllm.run``, which may build the zoo a config asks for), the reports
(``lensllm.report``) and the command line.  A module may import its own layer and those
below, never one above; the core imports no third-party package but numpy, scipy and
pandas; no two modules import each other, directly or through others.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "lensllm"

#: module-name prefix -> (layer rank, layer name); the longest prefix wins
LAYERS = {
    "lensllm.errors": (0, "base"),
    "lensllm.fileio": (0, "base"),
    "lensllm": (1, "core"),  # the package itself re-exports the core's API
    "lensllm.core": (1, "core"),
    "lensllm.hf": (2, "hf"),
    "lensllm.zoo": (3, "zoo"),
    "lensllm.run": (4, "run"),
    "lensllm.report": (5, "report"),
    "lensllm.cli": (6, "cli"),
    "lensllm.__main__": (6, "cli"),
}
CORE_THIRD_PARTY = {"numpy", "scipy", "pandas"}
MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> tuple[int, str]:
    best = max((prefix for prefix in LAYERS
                if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def _resolve(name: str) -> str:
    """The package module that ``name`` (a module or an attribute of one) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str) -> set[str]:
    """Every name imported anywhere in ``module`` (function-level imports included)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if base.startswith("lensllm") else base)
    return names


def _internal_edges(module: str) -> set[str]:
    return {target for name in _imports(module) if name.split(".")[0] == "lensllm"
            and (target := _resolve(name)) and target != module}


def test_every_module_belongs_to_a_layer():
    assert "lensllm.core.curves" in MODULES and "lensllm.cli" in MODULES
    for module in MODULES:
        _layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_nothing_imports_upward(module):
    rank, layer = _layer(module)
    for target in _internal_edges(module):
        target_rank, target_layer = _layer(target)
        assert target_rank <= rank, f"{module} ({layer}) imports {target} ({target_layer})"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m)[1] in ("base", "core")))
def test_core_imports_only_numpy_scipy_pandas(module):
    for name in _imports(module):
        top = name.split(".")[0]
        if top == "lensllm" or top in sys.stdlib_module_names or top == "__future__":
            continue
        assert top in CORE_THIRD_PARTY, f"{module} imports {name}"


def test_no_import_cycles():
    graph = {module: _internal_edges(module) for module in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt):], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_no_source_file_over_the_line_limit():
    long = {m: n for m, p in MODULES.items()
            if (n := len(p.read_text("utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_the_rule_catches_an_upward_import(tmp_path):
    # the checker itself must be able to fail: a core module importing the run layer
    source = "from lensllm.run.pipeline import run\n"
    tree = ast.parse(source)
    node = tree.body[0]
    assert isinstance(node, ast.ImportFrom)
    target = _resolve(f"{node.module}.{node.names[0].name}")
    assert target == "lensllm.run.pipeline"
    assert _layer(target)[0] > _layer("lensllm.core.curves")[0]


def test_bench_never_imports_torch():
    # the numerical commands must work without the finetune extra and start fast
    import subprocess

    code = ("import sys; from lensllm.cli import main\n"
            "try:\n    main(['bench', '--tasks', 'flan', '--methods', 'ats,lensllm'])\n"
            "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
            "print('heavy:', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().endswith("heavy: []"), out
