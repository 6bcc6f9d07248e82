"""The layout rules of the source tree, checked on its syntax (``ast``), not by importing it.

Sizes (STYLE 9): a module has at most ``MAX_MODULE`` lines and a function (or method) at most
``MAX_FUNCTION``, from its ``def`` line to its last line, decorators not counted. An exception
names its reason in the file, on a line of its own:

* a function: ``# size: <reason>`` on the line right above its ``def`` (above its first
  decorator when it has one), indented like the ``def``;
* a module: ``# size: <reason>`` at the start of a line above the module's first statement
  after its docstring (between the docstring and the first import).

Gradients (STYLE 2): only ``polytask/autograd/`` runs backward passes or writes ``.grad``.
Outside it, no ``torch.autograd.grad`` / ``torch.autograd.backward`` call, no ``x.backward(...)``
except on the two hand-offs to autograd (``engine.backward``: ``PerTaskGradients``;
``objective.backward``: ``Objective``, so the receiver carries one of those names), no
assignment to ``.grad`` and no in-place method on it (``p.grad.add_(...)``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "polytask"
MAX_MODULE = 300
MAX_FUNCTION = 60
SIZE_REASON = re.compile(r"#\s*size:\s*\S")
#: receivers of ``.backward(...)`` that are polytask's hand-offs to autograd, not a tensor's
HANDOFFS = {"engine", "objective"}


def _sources() -> list[Path]:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50, f"no sources found under {SRC}"
    return files


def size_violations(text: str, where: str) -> list[str]:
    """``where: ...`` for the module and every function over its size without a reason."""
    lines = text.splitlines()
    tree = ast.parse(text)
    found = []
    if len(lines) > MAX_MODULE:
        body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
        head = lines[: body[0].lineno - 1] if body else lines
        if not any(SIZE_REASON.match(line) for line in head):
            found.append(f"{where}: module of {len(lines)} lines (> {MAX_MODULE})")
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length <= MAX_FUNCTION:
            continue
        top = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        above = lines[top - 2].strip() if top >= 2 else ""
        if not SIZE_REASON.match(above):
            found.append(
                f"{where}:{node.lineno}: function {node.name} of {length} lines (> {MAX_FUNCTION})"
            )
    return found


def _receiver(node: ast.expr) -> str | None:
    """The last name of ``a.b.c`` (``c``), of ``name`` (``name``); None otherwise."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def gradient_violations(text: str, where: str) -> list[str]:
    """``where:line: ...`` for every backward pass run or ``.grad`` written in ``text``."""
    found = []
    for node in ast.walk(ast.parse(text)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign | ast.Delete):
            targets = list(node.targets) if isinstance(node, ast.Delete) else [node.target]
        while targets:  # unpack ``a.grad, b.grad = ...``; ``d[p.grad] = ...`` only reads it
            target = targets.pop()
            if isinstance(target, ast.Tuple | ast.List):
                targets += target.elts
            elif isinstance(target, ast.Starred):
                targets.append(target.value)
            elif isinstance(target, ast.Attribute) and target.attr == "grad":
                found.append(f"{where}:{node.lineno}: writes .grad")
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        func = node.func
        owner = _receiver(func.value)
        if func.attr in ("grad", "backward") and owner == "autograd":
            found.append(f"{where}:{node.lineno}: calls autograd.{func.attr}")
        elif func.attr == "backward" and owner not in HANDOFFS:
            found.append(f"{where}:{node.lineno}: calls {owner or '<expr>'}.backward")
        elif (
            isinstance(func.value, ast.Attribute)
            and func.value.attr == "grad"
            and func.attr.endswith("_")
            and not func.attr.startswith("_")
        ):
            found.append(f"{where}:{node.lineno}: writes .grad in place (.grad.{func.attr})")
    return found


def test_modules_and_functions_stay_small_or_say_why() -> None:
    found = []
    for path in _sources():
        found += size_violations(path.read_text("utf-8"), str(path.relative_to(SRC.parent)))
    assert not found, "too long, and no `# size: <reason>` line:\n" + "\n".join(found)


def test_only_autograd_runs_backward_or_writes_grad() -> None:
    found = []
    for path in _sources():
        if (SRC / "autograd") in path.parents:
            continue
        found += gradient_violations(path.read_text("utf-8"), str(path.relative_to(SRC.parent)))
    assert not found, "only polytask/autograd/ may do this:\n" + "\n".join(found)


def test_the_checks_catch_what_they_claim() -> None:
    """Each rule fires on a planted case and stays quiet on the allowed forms."""
    long_body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION))
    bare = f"def f():\n{long_body}"
    assert len(size_violations(bare, "m.py")) == 1
    assert size_violations(f"# size: one table, kept whole\n{bare}", "m.py") == []
    decorated = f"# size: one table\n@staticmethod\n{bare}"
    assert size_violations(decorated, "m.py") == []
    module = '"""Doc."""\n' + "x = 1\n" * MAX_MODULE
    assert len(size_violations(module, "m.py")) == 1
    assert size_violations('"""Doc."""\n# size: generated\n' + "x = 1\n" * MAX_MODULE, "m.py") == []

    bad = (
        "loss.backward()\n"
        "accelerator.backward(total)\n"
        "torch.autograd.grad(loss, params)\n"
        "p.grad = g\n"
        "p.grad += g\n"
        "p.grad.add_(g)\n"
        "a.grad, b.grad = g, h\n"
    )
    assert len(gradient_violations(bad, "m.py")) == 8  # the last line writes two
    good = (
        "engine.backward(losses, combine)\n"
        "self.objective.backward(accelerator, losses)\n"
        "if p.grad is not None: y = p.grad.clone()\n"
        "seen[p.grad] = 1\n"
    )
    assert gradient_violations(good, "m.py") == []
