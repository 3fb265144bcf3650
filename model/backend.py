"""The two ways every rule is evaluated: concretely (Python values) and symbolically (Z3 terms).

Rules take a backend `B` and use only its connectives for booleans; integers use Python's
operators, which Z3 overloads.  `PY` is the fast path for conformance; `Z3` builds terms for the
proofs.  Because both run the very same rule code, there is one definition of the semantics.
"""
from __future__ import annotations

from typing import Any

import z3


class _Py:
    """Concrete evaluation: plain bools and ints."""

    symbolic = False
    T = True
    F = False

    @staticmethod
    def and_(*xs: Any) -> bool:
        for x in xs:
            if not x:
                return False
        return True

    @staticmethod
    def or_(*xs: Any) -> bool:
        for x in xs:
            if x:
                return True
        return False

    @staticmethod
    def not_(x: Any) -> bool:
        return not x

    @staticmethod
    def ite(c: Any, a: Any, b: Any) -> Any:
        return a if c else b

    @staticmethod
    def div(x: Any, n: int) -> Any:
        """Integer division by a positive constant."""
        return x // n

    @staticmethod
    def is_true(x: Any) -> bool:
        """Whether `x` is certainly true (concretely: is true)."""
        return bool(x)

    @staticmethod
    def is_false(x: Any) -> bool:
        return not x


class _Z3:
    """Symbolic evaluation: Z3 terms (Python bools/ints are lifted where needed)."""

    symbolic = True
    T = z3.BoolVal(True)
    F = z3.BoolVal(False)

    @staticmethod
    def and_(*xs: Any) -> Any:
        xs = tuple(x for x in xs if x is not True and not z3.is_true(x))
        if any(x is False or z3.is_false(x) for x in xs):
            return _Z3.F
        return xs[0] if len(xs) == 1 else z3.And(*xs) if xs else _Z3.T

    @staticmethod
    def or_(*xs: Any) -> Any:
        xs = tuple(x for x in xs if x is not False and not z3.is_false(x))
        if any(x is True or z3.is_true(x) for x in xs):
            return _Z3.T
        return xs[0] if len(xs) == 1 else z3.Or(*xs) if xs else _Z3.F

    @staticmethod
    def not_(x: Any) -> Any:
        if isinstance(x, bool):
            return z3.BoolVal(not x)
        return z3.Not(x)

    @staticmethod
    def ite(c: Any, a: Any, b: Any) -> Any:
        if isinstance(c, bool):
            return a if c else b
        if z3.is_true(c):
            return a
        if z3.is_false(c):
            return b
        if isinstance(a, bool):
            a = z3.BoolVal(a)
        if isinstance(b, bool):
            b = z3.BoolVal(b)
        return z3.If(c, a, b)

    @staticmethod
    def div(x: Any, n: int) -> Any:
        return x / n if z3.is_expr(x) else x // n  # Z3's Int division floors for n > 0

    @staticmethod
    def is_true(x: Any) -> bool:
        return x is True or (not isinstance(x, bool) and z3.is_true(x))

    @staticmethod
    def is_false(x: Any) -> bool:
        return x is False or (not isinstance(x, bool) and z3.is_false(x))


PY = _Py()
Z3 = _Z3()
