"""Mutation operators: each finds the places in a module's syntax tree where
one small, plausible bug can be planted, and plants exactly one.

A mutant is named by where it is and what it does ("line 42 col 8: < -> <="),
so the same source always yields the same mutants in the same order and a
reviewed equivalent mutant keeps its name until that line changes.

Left alone on purpose: docstrings, assert statements (invariants that only
fail on a bug elsewhere), type annotations, decorators (dataclass options),
string constants (messages) and calls on `log` (what is logged is not
behaviour the tests pin down).
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from typing import Iterator

_COMPARE_FLIPS: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}
_BINOP_FLIPS: dict[type, type] = {ast.Add: ast.Sub, ast.Sub: ast.Add,
                                  ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult}
_SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
           ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in",
           ast.NotIn: "not in", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
           ast.FloorDiv: "//", ast.And: "and", ast.Or: "or"}


@dataclass(frozen=True, slots=True)
class Mutant:
    index: int  # position among the module's mutants
    line: int
    col: int
    end_col: int  # tells nested expressions starting at one column apart
    operator: str  # compare, constant, boolop, binop, not, return_none, drop
    description: str

    @property
    def ident(self) -> str:
        """Stable name, as written in scripts/mutation_equivalent.txt."""
        return f"{self.line}:{self.col}-{self.end_col}:{self.operator}:{self.description}"


def _skipped_nodes(tree: ast.Module) -> set[int]:
    """ids of nodes no operator may touch (see the module docstring)."""
    skipped: set[int] = set()

    def skip_all(node: ast.AST) -> None:
        skipped.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            skip_all(node)
        elif isinstance(node, (ast.AnnAssign, ast.arg)) and node.annotation is not None:
            skip_all(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for decorator in node.decorator_list:
                skip_all(decorator)
            if not isinstance(node, ast.ClassDef) and node.returns is not None:
                skip_all(node.returns)
        elif isinstance(node, ast.ImportFrom):
            skip_all(node)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
                _is_log_call(node.value):
            skip_all(node)  # the log statement itself is not dropped either
        elif isinstance(node, ast.Call) and _is_log_call(node):
            skip_all(node)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                skip_all(body[0])
    return skipped


def _is_log_call(call: ast.Call) -> bool:
    func = call.func
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and \
        func.value.id == "log"


def _points(tree: ast.Module) -> Iterator[tuple[ast.AST, str, str, object]]:
    """(node, operator, description, change) for every mutation point, in
    source order; `change` tells `_apply` what to do."""
    skipped = _skipped_nodes(tree)
    nodes = [n for n in ast.walk(tree) if id(n) not in skipped and hasattr(n, "lineno")]
    nodes.sort(key=lambda n: (n.lineno, n.col_offset, type(n).__name__))
    for node in nodes:
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                flip = _COMPARE_FLIPS.get(type(op))
                if flip:
                    yield node, "compare", f"{_SYMBOL[type(op)]} -> {_SYMBOL[flip]} (#{i})", \
                        ("compare", i, flip)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_FLIPS:
            flip = _BINOP_FLIPS[type(node.op)]
            yield node, "binop", f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[flip]}", ("binop", flip)
        elif isinstance(node, ast.BoolOp):
            flip = ast.Or if isinstance(node.op, ast.And) else ast.And
            yield node, "boolop", f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[flip]}", ("boolop", flip)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "not", "not x -> x", ("not",)
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            yield node, "constant", f"{node.value} -> {not node.value}", ("constant", not node.value)
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            for delta in (1, -1):
                new = node.value + delta
                yield node, "constant", f"{node.value} -> {new}", ("constant", new)
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            yield node, "return_none", "return x -> return None", ("return_none",)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Expr)) and _in_function(tree, node):
            yield node, "drop", f"drop {type(node).__name__.lower()}", ("drop",)


def _in_function(tree: ast.Module, target: ast.AST) -> bool:
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for stmt in ast.walk(func):
                if stmt is target:
                    return True
    return False


def find_mutants(source: str) -> list[Mutant]:
    tree = ast.parse(source)
    return [Mutant(i, node.lineno, node.col_offset, node.end_col_offset or 0, operator,
                   description)
            for i, (node, operator, description, _) in enumerate(_points(tree))]


class _Planter(ast.NodeTransformer):
    def __init__(self, target: ast.AST, change: tuple) -> None:
        self.target = target
        self.change = change

    def visit(self, node: ast.AST) -> ast.AST:
        if node is not self.target:
            return self.generic_visit(node)
        kind, *args = self.change
        if kind == "compare":
            index, flip = args
            node.ops[index] = flip()
        elif kind in ("binop", "boolop"):
            node.op = args[0]()
        elif kind == "not":
            return node.operand
        elif kind == "constant":
            node.value = args[0]
        elif kind == "return_none":
            node.value = None
        elif kind == "drop":
            return ast.Pass()
        return node


def mutate(source: str, mutant: Mutant) -> str:
    """`source` with `mutant` planted (and nothing else changed in meaning)."""
    tree = ast.parse(source)
    node, _, _, change = list(_points(tree))[mutant.index]
    mutated = _Planter(node, copy.deepcopy(change)).visit(tree)
    return ast.unparse(ast.fix_missing_locations(mutated))
