"""The layering of docs/architecture.md, proven from the code's AST (imports inside functions count).

    app       api, cli (and cli_train), the `ocula` front door
    features  explain, export, serve, audit, transfer, report       (plug in; nothing below imports them)
    core      bundle, engine, inference    above    tasks, evaluation    above    modality
              above    data, models    above    errors, names, io, log, config, ...

A module may import its own layer and the layers below it, never above; there is no import cycle;
no module imports another package's private (`_name`) helpers.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
BASE = {"errors", "names", "version", "io", "log", "weights_file", "environment", "run_dir", "lazy"}
LAYERS = [  # lowest first: top-level name under ocula → layer
    BASE,
    {"config", "config_sections", "data", "models"},
    {"modality"},
    {"tasks", "evaluation"},
    {"bundle", "engine", "inference"},
    {"explain", "export", "serve", "audit", "transfer", "report", "track"},
    {"api", "cli", "cli_train", "cli_datasets", "cli_predict", "__main__", ""},
]
FEATURES = LAYERS[5]


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "ocula").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "ocula"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "ocula":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub, [], node.lineno) if sub in MODULES else (base, [alias.name], node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        graph[module] = {_resolve(target) for target, _, _ in _imports(module, path)} - {module, ""}
    return graph


def _top(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _layer(module: str) -> int:
    top = _top(module)
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"{module}: its package '{top}' has no layer in tests/test_layering.py")


def test_every_package_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_module_imports_a_layer_above_its_own():
    wrong = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
             for a, targets in _graph().items() for b in targets if _layer(b) > _layer(a)]
    assert not wrong, "\n".join(sorted(wrong))


def test_the_core_never_imports_a_feature_package():
    core, graph = [m for m in MODULES if _layer(m) < 5], _graph()  # one parse of every module, not one per module
    wrong = [f"{a} imports {b}" for a in core for b in graph[a] if _top(b) in FEATURES]
    assert not wrong, "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(root):
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_counting_imports_inside_functions():
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(" ↔ ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_helper_is_imported_from_another_package():
    wrong = []
    for module, path in MODULES.items():
        for target, names, line in _imports(module, path):
            for name in names:
                if name.startswith("_") and not name.startswith("__") and _top(_resolve(target)) != _top(module):
                    wrong.append(f"{module}:{line} imports {target}.{name}")
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("rule", ["modality"])
def test_no_module_outside_the_modality_package_branches_on_modality(rule):
    import importlib.util

    spec = importlib.util.spec_from_file_location("modality_branches",
                                                  SRC.parent / "bench" / "modality_branches.py")
    counter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(counter)
    found = counter.branching_modules(SRC / "ocula")
    assert not found, "\n".join(f"{m}: {hits}" for m, hits in found.items())


APP_FILES = {"__init__.py", "api.py", "cli.py", "cli_train.py", "cli_datasets.py", "cli_predict.py", "__main__.py"}  # src/ocula/<these>: the app layer
REWRITING = {"engine/trainer.py", "engine/plan.py"}  # issue 24: being rewritten; their reasons come with that
MAX_INSIDE_FUNCTIONS = 20  # issue 24: 188 before


def _nested_internal_imports(source: str) -> list[int]:
    """Lines of every `import ocula…`/`from ocula… import`/relative import nested in a function."""
    found = []

    def walk(node, inside):
        for child in ast.iter_child_nodes(node):
            internal = (isinstance(child, ast.Import) and any(a.name.split(".")[0] == "ocula" for a in child.names)
                        or isinstance(child, ast.ImportFrom)
                        and (child.level > 0 or (child.module or "").split(".")[0] == "ocula"))
            if inside and internal:
                found.append(child.lineno)
            walk(child, inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(source), False)
    return found


def _internal_imports_inside_functions() -> list[tuple[str, int, str]]:
    """(file under src/ocula, line, its text) for each nested internal import outside the app layer
    (STYLE.md 11: ocula's modules import each other at the top of the file)."""
    found = []
    for path in sorted((SRC / "ocula").rglob("*.py")):
        rel = path.relative_to(SRC / "ocula").as_posix()
        if rel not in APP_FILES and path.name != "cli.py":  # a feature's cli.py is that feature's app layer
            lines = path.read_text().splitlines()
            found += [(rel, n, lines[n - 1]) for n in _nested_internal_imports("\n".join(lines))]
    return found


def test_internal_imports_sit_at_the_top_of_their_files():
    found = _internal_imports_inside_functions()
    assert len(found) <= MAX_INSIDE_FUNCTIONS, "\n".join(f"{f}:{n}: {t.strip()}" for f, n, t in found)


def test_each_internal_import_inside_a_function_says_why():
    """`# lazy: …` (keeps `import ocula`/`ocula --help` fast) or `# cycle: …`, on its line or the line above."""
    wrong = []
    for rel, line, text in _internal_imports_inside_functions():
        above = (SRC / "ocula" / rel).read_text().splitlines()[line - 2].strip()
        if rel not in REWRITING and not any(tag in text or above.startswith(tag) for tag in ("# lazy:", "# cycle:")):
            wrong.append(f"{rel}:{line}: {text.strip()}")
    assert not wrong, "\n".join(wrong)


def test_the_import_counter_sees_internal_imports_in_functions_only():
    source = ("import ocula.x\nimport os\ndef f():\n    from ocula import a\n    def g():\n        from . import b\n"
              "    import os\n    import ocula.y\nclass C:\n    from ocula import c\n")
    assert _nested_internal_imports(source) == [4, 6, 8]
