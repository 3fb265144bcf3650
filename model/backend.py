"""The two ways every rule is evaluated: concretely (Python values) and symbolically (Z3 terms).

Rules take a backend `B` and use only its connectives for booleans; integers use Python's
operators, which Z3 overloads.  `PY` is the fast path for conformance; `Z3` builds terms for the
proofs.  Because both run the very same rule code, there is one definition of the semantics.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import z3


_FIELD_INDEX: dict[type, dict[str, int]] = {}


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
    def select(c: Any, a: Any, b: Any) -> Any:
        """`ite` over whole records (NamedTuples of backend values)."""
        return a if c else b

    @staticmethod
    def put(rec: Any, **kw: Any) -> Any:
        """rec._replace(**kw); rec itself when no field changes (most updates of the
        interpreter's cells change nothing).  NamedTuple._replace costs ~2.5 us here; filling
        a list by field index and building the tuple from it ~1 us."""
        t = type(rec)
        index = _FIELD_INDEX.get(t) or _FIELD_INDEX.setdefault(
            t, {f: i for i, f in enumerate(t._fields)})
        out = None
        for k, v in kw.items():
            i = index[k]
            if rec[i] != v:
                if out is None:
                    out = list(rec)
                out[i] = v
        return rec if out is None else tuple.__new__(t, out)

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


_CTX = z3.main_ctx()
_INT_VALS: dict[int, z3.ArithRef] = {}


def _z3_args(terms: list[Any]) -> Any:
    arr = (z3.Ast * len(terms))()
    for i, t in enumerate(terms):
        arr[i] = t.as_ast()
    return arr


def _z3_val(x: Any, like_bool: bool) -> Any:
    """A Python constant as a Z3 term (ite arms)."""
    if not isinstance(x, (bool, int)):
        return x
    if like_bool:
        return z3.BoolVal(x)
    v = _INT_VALS.get(x)
    if v is None:
        v = _INT_VALS[x] = z3.IntVal(x)
    return v


class _Z3:
    """Symbolic evaluation: Z3 terms.  Constants stay Python bools, so rules fold them away
    and the terms only hold what is really symbolic.  Terms are made with Z3's C API directly:
    z3.And/Or/If check and coerce every argument, which cost most of the proofs' time, and the
    arguments here are already terms of the right sort."""

    symbolic = True
    T = True
    F = False

    @staticmethod
    def and_(*xs: Any) -> Any:
        terms = []
        for x in xs:
            if x is True:
                continue
            if x is False:
                return False
            terms.append(x)
        if len(terms) < 2:
            return terms[0] if terms else True
        return z3.BoolRef(z3.Z3_mk_and(_CTX.ref(), len(terms), _z3_args(terms)), _CTX)

    @staticmethod
    def or_(*xs: Any) -> Any:
        terms = []
        for x in xs:
            if x is False:
                continue
            if x is True:
                return True
            terms.append(x)
        if len(terms) < 2:
            return terms[0] if terms else False
        return z3.BoolRef(z3.Z3_mk_or(_CTX.ref(), len(terms), _z3_args(terms)), _CTX)

    @staticmethod
    def not_(x: Any) -> Any:
        if isinstance(x, bool):
            return not x
        return z3.BoolRef(z3.Z3_mk_not(_CTX.ref(), x.as_ast()), _CTX)

    @staticmethod
    def ite(c: Any, a: Any, b: Any) -> Any:
        if isinstance(c, bool):
            return a if c else b
        if a is b or (isinstance(a, (bool, int)) and type(a) is type(b) and a == b):
            return a
        is_bool = isinstance(a, (bool, z3.BoolRef)) and isinstance(b, (bool, z3.BoolRef))
        ast = z3.Z3_mk_ite(_CTX.ref(), c.as_ast(), _z3_val(a, is_bool).as_ast(),
                           _z3_val(b, is_bool).as_ast())
        return z3.BoolRef(ast, _CTX) if is_bool else z3.ArithRef(ast, _CTX)

    @classmethod
    def select(cls, c: Any, a: Any, b: Any) -> Any:
        if isinstance(c, bool):
            return a if c else b
        return type(a)(*(cls.ite(c, x, y) for x, y in zip(a, b)))

    @staticmethod
    def put(rec: Any, **kw: Any) -> Any:
        return rec._replace(**kw)

    @staticmethod
    def div(x: Any, n: int) -> Any:
        return x / n if z3.is_expr(x) else x // n  # Z3's Int division floors for n > 0

    @staticmethod
    def is_true(x: Any) -> bool:
        return x is True

    @staticmethod
    def is_false(x: Any) -> bool:
        return x is False


PY = _Py()
Z3 = _Z3()

_memos: list[dict] = []


def memo_concrete(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Memoise a rule for the PY backend (its arguments are then hashable values); Z3 calls
    go straight through.  The interpreter asks the same few questions again and again."""
    memo: dict = {}
    _memos.append(memo)

    @functools.wraps(fn)
    def wrapper(B: Any, *args: Any) -> Any:
        if B is not PY:
            return fn(B, *args)
        try:
            return memo[args]
        except KeyError:
            memo[args] = out = fn(B, *args)
            return out

    return wrapper


def clear_memos() -> None:
    """Forget memoised results (tests that swap a rule for a mutant call this)."""
    for m in _memos:
        m.clear()
