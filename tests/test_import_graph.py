"""The import graph of din_fast, read from the source (AST): no import cycles among din_fast modules, the
layers import only downwards, and every module imports in a fresh interpreter on its own."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    """din_fast module name -> source file (kernels/ is installed as din_fast.kernels)."""
    out = {}
    for base, package in ((ROOT / "din_fast", "din_fast"), (ROOT / "kernels", "din_fast.kernels")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _target(name: str) -> str | None:
    """The din_fast module an imported name lives in (``from din_fast import ops`` names din_fast.ops)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, top_level_only: bool) -> set[str]:
    """din_fast modules ``module`` imports (all its imports, or only those run when it is imported)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # imports inside top-level if/try blocks run at import time too
        nodes = [n for top in tree.body if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 for n in ast.walk(top)]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            names = [node.args[0].value]
        else:
            continue
        for name in names:
            target = _target(name) if name.startswith("din_fast") else None
            if target and target != module:
                found.add(target)
    return found


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _is_package_init_edge(a: str, b: str) -> bool:
    """A package's __init__ re-exporting its own submodules, or a submodule importing a sibling through
    its package, is how a package is assembled, not a layering cycle."""
    return b.startswith(a + ".") or a.startswith(b + ".")


def test_no_import_cycles_at_import_time():
    edges = {m: {t for t in _imports(m, True) if not _is_package_init_edge(m, t)} for m in MODULES}
    assert _cycle(edges) is None, " -> ".join(_cycle(edges))


#: Lower layers never import (even inside a function) the layers that use them.
LAYERS = [
    ("din_fast.kernels", ["din_fast.ops", "din_fast.backends", "din_fast.models", "din_fast._extension"]),
    ("din_fast.op_contract", ["din_fast"]),
    ("din_fast._torch_internals", ["din_fast"]),
    ("din_fast.backends", ["din_fast.ops", "din_fast.models"]),
    ("din_fast._extension", ["din_fast.ops", "din_fast.models", "din_fast.backends"]),
    ("din_fast.ops", ["din_fast.models", "din_fast.inference", "din_fast.train", "din_fast.cli", "din_fast.io"]),
    ("din_fast.models", ["din_fast.backends", "din_fast.ops._library", "din_fast.kernels"]),
]


@pytest.mark.parametrize("lower, forbidden", LAYERS, ids=[lower for lower, _ in LAYERS])
def test_layers_import_only_downwards(lower, forbidden):
    allowed = {"din_fast.kernels": {"din_fast.op_contract"}}.get(lower, set())
    bad = []
    for module in MODULES:
        if module != lower and not module.startswith(lower + "."):
            continue
        for target in _imports(module, False):
            if target in allowed or target == lower or target.startswith(lower + "."):
                continue
            if any(target == f or target.startswith(f + ".") for f in forbidden):
                bad.append(f"{module} -> {target}")
    assert not bad


def test_every_module_imports_on_its_own():
    """Each module imported first, with no other din_fast module loaded: a child forked per module from an
    interpreter that has imported torch only (a fresh interpreter per module would spend minutes
    importing torch again)."""
    skip = ("din_fast.__main__", "din_fast.train.__main__",  # they run the command line
            # needs spandrel, whose torchvision may not import beside a CPU torch (tests/spandrel_import.py);
            # tests/test_spandrel.py imports it
            "din_fast.integrations.spandrel")
    names = sorted(m for m in MODULES if m not in skip)
    code = ("import importlib, os, sys, traceback\n"
            "import torch\n"
            "failed = []\n"
            "for name in sys.argv[1:]:\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        try:\n"
            "            importlib.import_module(name)\n"
            "        except BaseException:\n"
            "            traceback.print_exc()\n"
            "            os._exit(1)\n"
            "        os._exit(0)\n"
            "    if os.waitpid(pid, 0)[1] != 0:\n"
            "        failed.append(name)\n"
            "print('FAILED', *failed)\n")
    result = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True)
    assert result.stdout.strip() == "FAILED", result.stdout + result.stderr[-3000:]
