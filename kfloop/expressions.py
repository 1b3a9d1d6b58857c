"""Derived-column expressions: a small, safe language checked at config load and run on Arrow batches.

The syntax is that of the contract's rules (Python expressions over column names: ``amount > 100``,
``a + b``, ``and``/``or``/``not``, ``&``/``|``/``~``), parsed with :mod:`ast` and never executed as Python.
Only those operators, ``+ - * /`` and the functions in ``_CALLS`` exist; each node has a static type, so a
reference to an unknown column or a type mismatch fails when the config loads, not mid-ingest.
Evaluation is vectorized with ``pyarrow.compute``; a row whose value cannot be computed (an unparsable
date part, a local time a clock change skips) is reported per row so the caller can quarantine it.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfloop.column_types import ColumnType
from kfloop.errors import ExpressionError
from kfloop.schema import ARROW_TYPES
from kfloop.timezones import GAP, local_fields_type, parse_timestamps

T = ColumnType
_NUMERIC = (T.INT64, T.FLOAT64)
_PARTS = {"hour": pc.hour, "minute": pc.minute, "day_of_week": pc.day_of_week, "day": pc.day, "month": pc.month}
_PARTS |= {"year": pc.year, "second": pc.second, "day_of_year": pc.day_of_year}
_CALLS = {*_PARTS, "timestamp", "concat", "date", "if_else", "coalesce", "is_null", "abs"}
#: pandas' accessor spelling of the parts (``event_timestamp.dt.hour``), read as the functions: rules written for
#: pandas eval keep working, in the same time zone as ``hour(...)``.
_ACCESSORS = {
    **{p: p for p in _PARTS},
    "dayofweek": "day_of_week",
    "weekday": "day_of_week",
    "dayofyear": "day_of_year",
}
#: A result of one type may be stored as another: a comparison as a 0/1 label, an int as a float, anything as text.
_STORABLE = {(T.BOOL, T.INT64), (T.BOOL, T.FLOAT64), (T.INT64, T.FLOAT64)} | {(t, T.STRING) for t in T}


@dataclass
class RowFailures:
    """Rows whose value could not be computed: a mask, the offending input text, and why."""

    parts: list[tuple[np.ndarray, pa.Array, str]] = field(default_factory=list)


@lru_cache(maxsize=256)
def parse(expression: str) -> ast.expr:
    """The syntax tree of ``expression``; anything but the allowed node kinds is refused here."""
    try:
        tree = _Accessors().visit(ast.parse(expression.strip(), mode="eval")).body
    except SyntaxError as err:
        raise ExpressionError(f"does not parse: {err.msg}") from err
    for node in ast.walk(tree):
        membership = isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
        if membership and (len(node.ops) != 1 or not _constant_list(node.comparators[0])):
            raise ExpressionError(f"{ast.unparse(node)!r}: 'in' takes a list of constants, e.g. x in [0, 1]")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _CALLS or node.keywords:
                raise ExpressionError(f"unknown function in {ast.unparse(node)!r}; known: {', '.join(sorted(_CALLS))}")
        elif not isinstance(node, _ALLOWED):
            raise ExpressionError(f"{type(node).__name__.lower()} is not allowed: {ast.unparse(node)!r}")
    return tree


_ALLOWED = (
    ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Name, ast.Constant, ast.Load, ast.operator,
    ast.unaryop, ast.boolop, ast.cmpop, ast.List, ast.Tuple,
)  # fmt: skip


class _Accessors(ast.NodeTransformer):
    """``x.dt.hour`` → ``hour(x)``; any other attribute stays and is refused by :func:`parse`."""

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        inner = node.value
        if isinstance(inner, ast.Attribute) and inner.attr == "dt" and node.attr in _ACCESSORS:
            call = ast.Call(func=ast.Name(id=_ACCESSORS[node.attr], ctx=ast.Load()), args=[inner.value], keywords=[])
            return ast.copy_location(self.generic_visit(call), node)
        return self.generic_visit(node)


def _constant_list(node: ast.expr) -> bool:
    return isinstance(node, ast.List | ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.elts)


def names(expression: str) -> list[str]:
    """The column names ``expression`` reads, in order of first use (function names excluded)."""
    tree = parse(expression)
    funcs = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    bools = {"true", "false", "True", "False"}
    found = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in funcs and n.id not in bools]
    return list(dict.fromkeys(found))


_ARITH = {ast.Add: pc.add, ast.Sub: pc.subtract, ast.Mult: pc.multiply, ast.Div: pc.divide}
_CMP = {ast.Eq: pc.equal, ast.NotEq: pc.not_equal, ast.Lt: pc.less, ast.LtE: pc.less_equal}
_CMP |= {ast.Gt: pc.greater, ast.GtE: pc.greater_equal}
_LOGIC = {ast.And: pc.and_kleene, ast.Or: pc.or_kleene, ast.BitAnd: pc.and_kleene, ast.BitOr: pc.or_kleene}


def infer(expression: str, columns: Mapping[str, ColumnType]) -> ColumnType:
    """The type of ``expression`` over ``columns``; an :class:`ExpressionError` says what is wrong."""
    return _type(parse(expression), columns)


def storable(result: ColumnType, declared: ColumnType) -> bool:
    """Whether a value of type ``result`` can be stored in a column declared ``declared``."""
    return result is declared or (result, declared) in _STORABLE


def _const_type(value: object) -> ColumnType:
    if isinstance(value, bool):
        return T.BOOL
    if isinstance(value, int):
        return T.INT64
    if isinstance(value, float):
        return T.FLOAT64
    if isinstance(value, str):
        return T.STRING
    raise ExpressionError(f"constant {value!r} is not a number, text or true/false")


def _type(node: ast.expr, cols: Mapping[str, ColumnType]) -> ColumnType:
    text = ast.unparse(node)
    if isinstance(node, ast.List | ast.Tuple):
        raise ExpressionError(f"{text!r}: a list is allowed only after 'in' (x in [0, 1])")
    if isinstance(node, ast.Constant):
        return _const_type(node.value)
    if isinstance(node, ast.Name):
        if node.id in ("true", "false", "True", "False"):
            return T.BOOL
        if node.id not in cols:
            raise ExpressionError(f"unknown column {node.id!r} (known: {', '.join(cols)})")
        return cols[node.id]
    if isinstance(node, ast.UnaryOp):
        inner = _type(node.operand, cols)
        want = (T.BOOL,) if isinstance(node.op, ast.Not | ast.Invert) else _NUMERIC
        if inner not in want:
            raise ExpressionError(f"{text!r}: operand is {inner.value}")
        return inner
    if isinstance(node, ast.BoolOp) or (isinstance(node, ast.BinOp) and type(node.op) in (ast.BitAnd, ast.BitOr)):
        operands = node.values if isinstance(node, ast.BoolOp) else [node.left, node.right]
        bad = [t.value for t in (_type(v, cols) for v in operands) if t is not T.BOOL]
        if bad:
            raise ExpressionError(f"{text!r}: and/or need true/false operands, got {', '.join(bad)}")
        return T.BOOL
    if isinstance(node, ast.BinOp):
        left, right = _type(node.left, cols), _type(node.right, cols)
        if type(node.op) not in _ARITH:
            raise ExpressionError(f"{text!r}: operator not allowed")
        if isinstance(node.op, ast.Add) and left is right is T.STRING:
            return T.STRING
        if left not in _NUMERIC or right not in _NUMERIC:
            raise ExpressionError(f"{text!r}: cannot combine {left.value} and {right.value}")
        return T.FLOAT64 if isinstance(node.op, ast.Div) or T.FLOAT64 in (left, right) else T.INT64
    if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
        left = _type(node.left, cols)
        if not node.comparators[0].elts:  # type: ignore[attr-defined]
            raise ExpressionError(
                f"{text!r}: an empty list ({'never' if isinstance(node.ops[0], ast.In) else 'always'} "
                "true): list the values, or drop the condition"
            )
        for elt in node.comparators[0].elts:  # type: ignore[attr-defined]
            kind = _const_type(elt.value)
            if not (kind is left or (kind in _NUMERIC and left in _NUMERIC)):
                raise ExpressionError(f"{text!r}: cannot compare {left.value} with {kind.value}")
        return T.BOOL
    if isinstance(node, ast.Compare):
        types = [_type(v, cols) for v in (node.left, *node.comparators)]
        for a, b in pairwise(types):
            if not (a is b or (a in _NUMERIC and b in _NUMERIC)):
                raise ExpressionError(f"{text!r}: cannot compare {a.value} with {b.value}")
        return T.BOOL
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    return _call_type(node.func.id, [_type(a, cols) for a in node.args], text)


def _call_type(name: str, args: list[ColumnType], text: str) -> ColumnType:
    def need(count: tuple[int, ...], kinds: tuple[ColumnType, ...] | None = None) -> None:
        if len(args) not in count:
            raise ExpressionError(f"{text!r}: {name}() takes {' or '.join(map(str, count))} argument(s)")
        if kinds is not None and any(a not in kinds for a in args):
            got = ", ".join(a.value for a in args)
            raise ExpressionError(f"{text!r}: {name}() needs {'/'.join(k.value for k in kinds)}, got {got}")

    if name in _PARTS or name == "date":
        need((1,), (T.TIMESTAMP,))
        return T.STRING if name == "date" else T.INT64
    if name == "timestamp":
        need((1, 2), (T.STRING,))
        return T.TIMESTAMP
    if name == "is_null":
        need((1,))
        return T.BOOL
    if name == "abs":
        need((1,), _NUMERIC)
        return args[0]
    if name == "concat":
        if len(args) < 2:
            raise ExpressionError(f"{text!r}: concat() takes at least 2 arguments")
        return T.STRING
    if name == "if_else":
        need((3,))
        if args[0] is not T.BOOL:
            raise ExpressionError(f"{text!r}: if_else() needs a true/false condition, got {args[0].value}")
        args = args[1:]
    elif len(args) < 2:
        raise ExpressionError(f"{text!r}: coalesce() takes at least 2 arguments")
    if len(set(args)) == 1:
        return args[0]
    if all(a in _NUMERIC for a in args):
        return T.FLOAT64
    raise ExpressionError(f"{text!r}: {name}() mixes {', '.join(a.value for a in args)}")


@dataclass
class _Env:
    table: pa.Table
    types: Mapping[str, ColumnType]
    zone: str | None
    failures: RowFailures


def evaluate(
    expression: str, table: pa.Table, types: Mapping[str, ColumnType], zone: str | None
) -> tuple[pa.Array, RowFailures]:
    """Evaluate ``expression`` on every row of ``table`` (typed columns); returns the values (null where
    an input is null or the row failed) and the rows that failed, with their input and why."""
    env = _Env(table, types, zone, RowFailures())
    out = _eval(parse(expression), env)
    n = table.num_rows
    if isinstance(out, pa.Scalar):
        out = pa.array([out.as_py()] * n, out.type)
    return out, env.failures


def _eval(node: ast.expr, env: _Env) -> pa.Array | pa.Scalar:
    if isinstance(node, ast.Constant):
        return pa.scalar(node.value, ARROW_TYPES[_const_type(node.value)])
    if isinstance(node, ast.Name):
        if node.id in ("true", "false", "True", "False"):
            return pa.scalar(node.id.lower() == "true")
        return env.table.column(node.id).combine_chunks()
    if isinstance(node, ast.UnaryOp):
        inner = _eval(node.operand, env)
        return pc.invert(inner) if isinstance(node.op, ast.Not | ast.Invert) else pc.negate(inner)
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, env) for v in node.values]
        out = values[0]
        for v in values[1:]:
            out = _LOGIC[type(node.op)](out, v)
        return out
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, env), _eval(node.right, env)
        if type(node.op) in _LOGIC:
            return _LOGIC[type(node.op)](left, right)
        if isinstance(node.op, ast.Add) and pa.types.is_string(left.type):
            return pc.binary_join_element_wise(left, right, "")
        if isinstance(node.op, ast.Div):
            return pc.divide(pc.cast(left, pa.float64()), pc.cast(right, pa.float64()))
        return _ARITH[type(node.op)](left, right)
    if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
        left = _eval(node.left, env)
        members = [e.value for e in node.comparators[0].elts]  # type: ignore[attr-defined]
        if pa.types.is_integer(left.type) and any(isinstance(m, float) for m in members):
            left = pc.cast(left, pa.float64())
        found = pc.is_in(left, value_set=pa.array(members, left.type))
        found = pc.if_else(pc.is_null(left), pa.scalar(None, pa.bool_()), found)  # unknown stays unknown
        return pc.invert(found) if isinstance(node.ops[0], ast.NotIn) else found
    if isinstance(node, ast.Compare):
        values = [_eval(v, env) for v in (node.left, *node.comparators)]
        out = None
        for op, a, b in zip(node.ops, values, values[1:], strict=False):
            part = _CMP[type(op)](a, b)
            out = part if out is None else pc.and_kleene(out, part)
        return out
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    return _call(node.func.id, [_eval(a, env) for a in node.args], env)


def _call(name: str, args: list[pa.Array | pa.Scalar], env: _Env) -> pa.Array | pa.Scalar:
    if name in _PARTS:
        return pc.cast(_PARTS[name](pc.cast(args[0], local_fields_type(env.zone))), pa.int64())
    if name == "date":
        return pc.strftime(pc.cast(args[0], local_fields_type(env.zone)), "%Y-%m-%d")
    if name == "concat":
        return pc.binary_join_element_wise(*(pc.cast(a, pa.string()) for a in args), "")
    if name == "is_null":
        return pc.is_null(args[0])
    if name == "abs":
        return pc.abs(args[0])
    if name == "if_else":
        return pc.if_else(*_common(args[0:1]), *_common(args[1:]))
    if name == "coalesce":
        return pc.coalesce(*_common(args))
    text = args[0] if len(args) == 1 else pc.binary_join_element_wise(args[0], args[1], " ")
    if isinstance(text, pa.Scalar):
        text = pa.array([text.as_py()] * env.table.num_rows, pa.string())
    parsed, gap = parse_timestamps(text, ARROW_TYPES[T.TIMESTAMP], env.zone)
    failed = np.asarray(pc.and_(parsed.is_null(), text.is_valid()))
    if failed.any():
        reasons = np.where(gap[failed], f"is not a valid timestamp ({GAP}{env.zone})", "is not a valid timestamp")
        for why in dict.fromkeys(reasons.tolist()):
            mask = np.zeros(len(failed), dtype=bool)
            mask[np.flatnonzero(failed)[reasons == why]] = True
            env.failures.parts.append((mask, text, why))
    return parsed


def _common(args: list[pa.Array | pa.Scalar]) -> list[pa.Array | pa.Scalar]:
    """Mixed int64/float64 arguments as float64 (the type :func:`infer` gives them)."""
    if len({a.type for a in args}) > 1 and all(
        pa.types.is_integer(a.type) or pa.types.is_floating(a.type) for a in args
    ):
        return [pc.cast(a, pa.float64()) for a in args]
    return args
