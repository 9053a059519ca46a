"""The shape of the code: the generic layers know no domain, the import graph has no
cycle, no private helper crosses a module, and no function runs over 80 lines.

Run alone, as any reader can: ``python -m pytest tests/test_architecture.py -q``
(or ``python tests/test_architecture.py`` to print the findings)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"core": "physiotwin", "organs": "physiotwin.organs", "plugins": "physiotwin.plugins",
            "calibration": "physiotwin.calibration"}
GENERIC = ("core", "calibration")
# words of the domains the built-in plugins bring (glucose-insulin, meals, CGM, blood pressure,
# kidney, drugs, exercise); none may appear in the code of the generic layers
DOMAIN = re.compile(r"glucose|cgm|carb|meal|bolus|insulin|basal|sodium|renal|cardio|hypo|hyper|clarke|mg/dl|mmhg|"
                    r"uva|padova|simglucose|sglt|exercise|blood_loss|creatinine|glyc|diabet|kidney|heart", re.I)
MAX_LINES = 80


def _modules():
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            yield folder, name, path, ast.parse(path.read_text())


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            body[0].value.value = ""
    return tree


def domain_words() -> dict[str, list[str]]:
    """``{file: [domain words]}`` in the code (comments and docstrings stripped) of core/ and calibration/."""
    found = {}
    for folder, _, path, tree in _modules():
        if folder in GENERIC:
            words = DOMAIN.findall(ast.unparse(_strip_docstrings(tree)))
            if words:
                found[str(path.relative_to(ROOT))] = sorted(set(words))
    return found


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Every import of a package module by another, at module level or inside a function."""
    modules = {name: (path, tree) for _, name, path, tree in _modules()}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, tree) in modules.items():
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, node, path.stem == "__init__")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and not (t in PACKAGES.values() and name.startswith(t + ".")):
                    graph[name].add(t)
    return graph


def import_cycles() -> list[list[str]]:
    graph = import_graph()
    cycles, color, stack = [], {}, []

    def visit(n):
        color[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if color.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in color:
                visit(m)
        stack.pop()
        color[n] = 2

    for n in sorted(graph):
        if n not in color:
            visit(n)
    return cycles


def private_imports() -> list[str]:
    out = []
    for _, name, path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("physiotwin")):
                out += [f"{name} imports {a.name} from {node.module}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def long_functions() -> list[str]:
    out = []
    for _, name, path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    out.append(f"{name}.{node.name}: {n} lines")
    return out


def test_generic_layers_name_no_domain_quantity():
    assert domain_words() == {}


def test_no_import_cycles():
    assert import_cycles() == []


def test_no_private_helper_crosses_a_module():
    assert private_imports() == []


def test_no_function_over_80_lines():
    assert long_functions() == []


def test_the_checks_can_fail():
    """The detectors find what they look for (so the tests above are not vacuous)."""
    tree = _strip_docstrings(ast.parse('"""glucose"""\ndef f():\n    """meal"""\n    return "cgm"\n'))
    assert DOMAIN.findall(ast.unparse(tree)) == ["cgm"]
    assert "physiotwin.calibration.twin" in import_graph()["physiotwin.cli"] or \
        "physiotwin.calibration" in import_graph()["physiotwin.cli"]


if __name__ == "__main__":
    report = {"domain words": domain_words(), "import cycles": import_cycles(), "private imports": private_imports(),
              "functions over 80 lines": long_functions()}
    for k, v in report.items():
        print(f"{k}: {v or 'none'}")
    sys.exit(1 if any(report.values()) else 0)
