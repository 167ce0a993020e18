"""The task seam, proven from the AST: nothing outside `ocula/tasks` asks which task it has (issue 24).

A task question is a comparison of something task-like with a task's name (`task.name == "multilabel"`,
`meta["task"] == "margin"`, `report.get("kind") == "multilabel"`), a read of `task.multilabel`, or a test for a
task's own bundle key (`"thresholds" in meta`, `meta.get("thresholds") is not None`). Such code asks the `Task`
instead: `task.label_outputs`, `task.default_augment()`, `task.fold_splitter(...)`, `task.export_properties(meta)`.
"""
from __future__ import annotations

import ast
from pathlib import Path

from ocula.tasks import INFERENCE

SRC = Path(__file__).resolve().parents[1] / "src" / "ocula"
TASK_NAMES = set(INFERENCE) | {"single_label", "multi-label", "multi_label", "singlelabel"}
TASK_KEYS = {"thresholds"}  # bundle fields that only one task writes
NAME_ATTRS = {"name", "kind"}
# Where a task question is the point, with the reason.
ALLOWED = {
    # the config resolves its own option alias (task=margin → the margin kind); the config layer is below tasks
    "config.py": 1,
}


def _is_task_like(node: ast.AST) -> bool:
    """`x.task`, `task`, `meta["task"]`, `x.get("task")`: an expression that holds a task or its record."""
    text = ast.unparse(node).lower()
    return "task" in text


def _str_values(node: ast.AST) -> set:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_str_values(e) for e in node.elts)) if node.elts else set()
    return set()


def _names_a_task(node: ast.AST) -> bool:
    """The task's identity: `<task-like>.name|.kind`, `<x>["task"]`, `<x>.get("task"|"kind"|"name")`."""
    if isinstance(node, ast.Attribute) and node.attr in NAME_ATTRS:
        return _is_task_like(node.value)
    if isinstance(node, ast.Subscript):
        return _str_values(node.slice) & {"task", "kind"} != set()
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
        key = _str_values(node.args[0])
        return bool(key & {"task", "kind"}) or (bool(key & NAME_ATTRS) and _is_task_like(node.func.value))
    return False


def _task_key_test(node: ast.Compare) -> bool:
    """`"thresholds" in meta` or `meta.get("thresholds") is (not) None`."""
    operands = [node.left, *node.comparators]
    if any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and _str_values(node.left) & TASK_KEYS:
        return True
    gets = [o for o in operands if isinstance(o, ast.Call) and isinstance(o.func, ast.Attribute)
            and o.func.attr == "get" and o.args and _str_values(o.args[0]) & TASK_KEYS]
    return bool(gets) and any(isinstance(o, ast.Constant) and o.value is None for o in operands)


def task_questions(source: str) -> list[tuple[int, str]]:
    """(line, code) of every task question in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            named = any(_names_a_task(o) for o in operands)
            literal = any(_str_values(o) & TASK_NAMES for o in operands)
            if (named and literal) or _task_key_test(node):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Attribute) and node.attr == "multilabel" and _is_task_like(node.value):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_nothing_outside_tasks_asks_which_task_it_has():
    leaks = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("tasks/"):
            continue
        found = task_questions(path.read_text())
        if len(found) > ALLOWED.get(rel, 0):
            leaks += [f"{rel}:{line}: {code}" for line, code in found]
    assert not leaks, "ask the Task instead (docs/architecture.md):\n" + "\n".join(leaks)


def test_the_detector_catches_planted_task_branches():
    planted = {
        'if self.task.name == "multilabel":\n    pass': 1,
        'x = "margin" != cfg.task.name': 1,
        'if meta["task"] in ("multilabel", "margin"):\n    pass': 1,
        'ok = report.get("kind") == "multilabel"': 1,
        'if clf.task.multilabel:\n    pass': 1,
        'if "thresholds" in meta:\n    pass': 1,
        'if meta.get("thresholds") is not None:\n    pass': 1,
    }
    for snippet, count in planted.items():
        assert len(task_questions(snippet)) == count, snippet


def test_the_detector_leaves_data_and_other_names_alone():
    clean = [
        'if splits.multilabel:\n    pass',  # the data's labels are sets: a data fact, not a task
        'if cfg.task.name == "auto":\n    pass',  # "auto" names no task
        'if model.name == "multilabel_net":\n    pass',
        'if spec.kind == "files":\n    pass',
        'm = meta.get("thresholds")',
        'if meta.get("task") in MODALITIES:\n    pass',
    ]
    for snippet in clean:
        assert task_questions(snippet) == [], snippet
