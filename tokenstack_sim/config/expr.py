"""Tiny, safe arithmetic for timing expressions in DRAM family files (`nCWL + nBL + nWR`, `max(a, b)`)."""

from __future__ import annotations

import ast
from collections.abc import Mapping

from tokenstack_sim.errors import InputError


def evaluate(text: str, names: Mapping[str, int], *, source: str | None = None, where: str | None = None) -> int:
    """Evaluate integer `text` using `names`; only + - * // , integers, names and max/min are allowed."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise InputError(f"cannot parse expression {text!r}", source=source, where=where) from None

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise InputError(f"unknown timing parameter {node.id!r} in {text!r}; known: "
                                 f"{', '.join(sorted(names))}", source=source, where=where)
            return int(names[node.id])
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)):
            a, b = ev(node.left), ev(node.right)
            return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(type(node.op), a // b if b else 0)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("max", "min")
                and node.args and not node.keywords):
            vals = [ev(a) for a in node.args]
            return max(vals) if node.func.id == "max" else min(vals)
        raise InputError(f"unsupported element in expression {text!r}", source=source, where=where)

    return ev(tree)
