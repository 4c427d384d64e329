"""SPICE numbers and parameter expressions: ``4.7f``, ``1meg``, ``10pF``, ``{2*W}``, ``'l*0.5'``.

SPICE is case-insensitive and a number may carry a scale suffix followed by free unit letters that are
ignored (``10pF`` = 1e-11, ``5ohm`` = 5). Expressions are evaluated by walking a Python AST that only
admits arithmetic, names from a parameter scope and a few maths functions: nothing is ever ``eval``-ed.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping

SCALE = {
    "t": 1e12,
    "g": 1e9,
    "meg": 1e6,
    "k": 1e3,
    "mil": 25.4e-6,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
    "p": 1e-12,
    "f": 1e-15,
    "a": 1e-18,
}

_NUMBER = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)(meg|mil|[tgkmunpfa])?([a-z]*)$", re.I)
# a number (with optional suffix and unit letters) inside an expression, not glued to an identifier
_NUMBER_IN_EXPR = re.compile(
    r"(?<![\w.])((?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)(meg|mil|[tgkmunpfa])?([a-z]*)", re.I
)
_FUNCS = {
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "ln": math.log,
    "log10": math.log10,
    "abs": abs,
    "min": min,
    "max": max,
    "pow": pow,
    "int": int,
    "floor": math.floor,
    "ceil": math.ceil,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "atan": math.atan,
}
_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
    ast.Mod: lambda a, b: a % b,
}


class ExpressionError(ValueError):
    """A value or expression that cannot be evaluated (the parser turns it into a DataError with a line)."""


def parse_number(token: str) -> float | None:
    """``'4.7f'`` -> 4.7e-15; ``'1MEG'`` -> 1e6; ``'7.73e-20'`` -> 7.73e-20; None if not a plain number."""
    m = _NUMBER.match(token.strip())
    if m is None:
        return None
    value = float(m.group(1))
    suffix = m.group(2)
    if suffix is not None:
        value *= SCALE[suffix.lower()]
    return value


def _expand_numbers(expr: str) -> str:
    def repl(m: re.Match) -> str:
        value = float(m.group(1))
        if m.group(2):
            value *= SCALE[m.group(2).lower()]
        return repr(value)

    return _NUMBER_IN_EXPR.sub(repl, expr)


def _eval_node(node: ast.AST, scope: Mapping[str, float]) -> float:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body, scope)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return float(node.value)
    if isinstance(node, ast.Name):
        key = node.id.lower()
        if key not in scope:
            raise ExpressionError(f"unknown parameter '{node.id}'")
        return float(scope[key])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval_node(node.operand, scope)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _eval_node(node.left, scope), _eval_node(node.right, scope)
        try:
            return float(_BINOPS[type(node.op)](a, b))
        except (ZeroDivisionError, OverflowError) as exc:
            raise ExpressionError(str(exc)) from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        fn = _FUNCS.get(node.func.id.lower())
        if fn is None:
            raise ExpressionError(f"unknown function '{node.func.id}'")
        try:
            return float(fn(*[_eval_node(a, scope) for a in node.args]))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ExpressionError(f"{node.func.id}(): {exc}") from None
    raise ExpressionError(f"unsupported expression element {type(node).__name__}")


def evaluate(text: str, scope: Mapping[str, float] | None = None) -> float:
    """Value of a SPICE number or expression; names look up ``scope`` (lower-case keys).

    Accepts ``{expr}``, ``'expr'``, ``"expr"`` or a bare token; ``^`` is power as in HSPICE/ngspice.
    """
    scope = scope or {}
    s = text.strip()
    plain = parse_number(s)
    if plain is not None:
        return plain
    if len(s) >= 2 and (s[0], s[-1]) in {("{", "}"), ("'", "'"), ('"', '"')}:
        s = s[1:-1].strip()
    if s.lower() in scope:
        return float(scope[s.lower()])
    expr = _expand_numbers(s).replace("^", "**")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise ExpressionError(f"cannot parse value '{text}'") from None
    return _eval_node(tree, scope)
