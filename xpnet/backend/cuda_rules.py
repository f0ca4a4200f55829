"""Optimizer rules traced into CUDA C: `trace_rule` runs a rule on symbols and renders
the arithmetic it records, for `cuda_kernels`' fused update kernels.

A rule ``rule(xp, p, g, *state, *scalars) -> (new_p, *new_state)`` is run once on
symbols that record what it computes; the recorded graph becomes the body of one
kernel. Values used twice (a new state that the parameter update also reads)
become `const T tK` temporaries; everything else is inlined with the parentheses
that keep Python's order of evaluation.
"""
import inspect
import math
import numbers

import numpy

__all__ = ["UnsupportedRuleError", "TracedRule", "trace_rule", "count_scalars"]


class UnsupportedRuleError(TypeError):
    """An optimizer rule does something the CUDA tracer can't turn into a kernel."""


_SUPPORTED = "+ - * /, unary -, <, <=, >, >=, Python numbers, xp.sqrt, xp.where, " \
             "xp.maximum, xp.minimum"

# C precedence levels (lower binds tighter); Python agrees on all of these.
_PREC = {"atom": 0, "neg": 1, "*": 2, "/": 2, "+": 3, "-": 3,
         "<": 4, "<=": 4, ">": 4, ">=": 4, "where": 6}


class _Sym:
    """A traced value: an operation on other symbols (a DAG node)."""
    __array_ufunc__ = None       # numpy ufuncs refuse symbols instead of making object arrays
    __hash__ = object.__hash__

    def __init__(self, op, args=(), text=None, boolean=False):
        self.op, self.args, self.text, self.boolean = op, args, text, boolean

    def _bin(self, op, other, swap=False):
        a, b = (_lift(other), self) if swap else (self, _lift(other))
        for v in (a, b):
            if v.boolean:
                raise UnsupportedRuleError("a comparison can only be the condition of xp.where")
        return _Sym(op, (a, b), boolean=op in ("<", "<=", ">", ">="))

    __add__ = lambda s, o: s._bin("+", o)
    __radd__ = lambda s, o: s._bin("+", o, True)
    __sub__ = lambda s, o: s._bin("-", o)
    __rsub__ = lambda s, o: s._bin("-", o, True)
    __mul__ = lambda s, o: s._bin("*", o)
    __rmul__ = lambda s, o: s._bin("*", o, True)
    __truediv__ = lambda s, o: s._bin("/", o)
    __rtruediv__ = lambda s, o: s._bin("/", o, True)
    __lt__ = lambda s, o: s._bin("<", o)
    __le__ = lambda s, o: s._bin("<=", o)
    __gt__ = lambda s, o: s._bin(">", o)
    __ge__ = lambda s, o: s._bin(">=", o)

    def __neg__(self):
        return _Sym("neg", (self,))

    def __pos__(self):
        return self

    def __bool__(self):
        raise UnsupportedRuleError("an optimizer rule can't branch on array values "
                                   "(`if`, `and`, `or`); use xp.where")

    def _refuse(self, *_):
        raise UnsupportedRuleError("an optimizer rule uses an operator the CUDA tracer does "
                                   "not support; supported: " + _SUPPORTED)

    __eq__ = __ne__ = __pow__ = __rpow__ = __abs__ = __mod__ = __rmod__ = _refuse
    __floordiv__ = __rfloordiv__ = __matmul__ = __rmatmul__ = _refuse


def _lift(v):
    if isinstance(v, _Sym):
        return v
    if isinstance(v, (bool, numpy.bool_)) or not isinstance(v, numbers.Real):
        raise UnsupportedRuleError("an optimizer rule can only combine its arrays with Python "
                                   "numbers, got %s" % type(v).__name__)
    return _Sym("const", text=float(v))


class _TraceNamespace:
    """The `xp` a rule sees while traced: the few functions a kernel can express."""

    def __init__(self, rule_name):
        self._rule = rule_name

    def sqrt(self, a):
        return _Sym("sqrt", (_number(a),))

    def maximum(self, a, b):
        return _Sym("maximum", (_number(a), _number(b)))

    def minimum(self, a, b):
        return _Sym("minimum", (_number(a), _number(b)))

    def where(self, cond, a, b):
        if not (isinstance(cond, _Sym) and cond.boolean):
            raise UnsupportedRuleError("xp.where needs a comparison of arrays as its condition")
        return _Sym("where", (cond, _number(a), _number(b)))

    def __getattr__(self, name):
        raise UnsupportedRuleError("optimizer rule %s uses xp.%s, which the CUDA tracer does not "
                                   "support; supported: %s" % (self._rule, name, _SUPPORTED))


def _number(v):
    v = _lift(v)
    if v.boolean:
        raise UnsupportedRuleError("a comparison can only be the condition of xp.where")
    return v


# How each operation is written, in C and (for tests) in Python.
_DIALECTS = {
    "c": {"sqrt": "sqrt(%s)", "maximum": "xp_maximum(%s, %s)", "minimum": "xp_minimum(%s, %s)",
          "where": "%s ? %s : %s"},
    "python": {"sqrt": "sqrt(%s)", "maximum": "maximum(%s, %s)", "minimum": "minimum(%s, %s)",
               "where": "%s if %s else %s"},
}


def _const_text(v, dialect):
    if math.isnan(v) or math.isinf(v):
        if dialect == "python":
            return "float(%r)" % str(v)
        bits = "0x7ff8000000000000LL" if math.isnan(v) else "0x7ff0000000000000LL"
        return "(T)(%s__longlong_as_double(%s))" % ("-" if v < 0 else "", bits)
    text = repr(v)
    if v < 0 or text.startswith("-"):
        text = "(%s)" % text
    return text if dialect == "python" else "(T)" + text


class TracedRule:
    """A traced rule: `temps` ``[(name, expr)]``, `assignments` ``[(target, expr)]``
    (targets ``p``, ``st0``, ...), `inputs` (the names it reads), in one dialect."""

    def __init__(self, temps, assignments, inputs):
        self.temps, self.assignments, self.inputs = temps, assignments, inputs

    def body(self):
        lines = ["const T %s = %s;" % t for t in self.temps]
        return "\n".join(lines + ["%s = %s;" % a for a in self.assignments])


def trace_rule(rule, n_state, n_scalars, dialect="c"):
    """Run `rule` on symbols ``p, g, st0.., s0..`` and render what it computes."""
    name = getattr(rule, "__name__", repr(rule))
    p, g = _Sym("var", text="p"), _Sym("var", text="g")
    state = [_Sym("var", text="st%d" % k) for k in range(n_state)]
    scalars = [_Sym("var", text="s%d" % k) for k in range(n_scalars)]
    out = rule(_TraceNamespace(name), p, g, *state, *scalars)
    if not isinstance(out, (tuple, list)) and n_state == 0:
        out = (out,)
    if not isinstance(out, (tuple, list)) or len(out) != 1 + n_state:
        raise UnsupportedRuleError("optimizer rule %s must return (new_p, *new_state): %d values"
                                   % (name, 1 + n_state))
    out = [_number(v) for v in out]

    uses = {}

    def count(node):
        uses[id(node)] = uses.get(id(node), 0) + 1
        if uses[id(node)] == 1:
            for a in node.args:
                count(a)

    for node in out:
        count(node)
    fmt, temps, named, inputs = _DIALECTS[dialect], [], {}, []

    def render(node):
        """(text, precedence) of `node`; a node used twice becomes a temporary."""
        if id(node) in named:
            return named[id(node)], 0
        if node.op == "var":
            if node.text not in inputs:
                inputs.append(node.text)
            return node.text, 0
        if node.op == "const":
            return _const_text(node.text, dialect), 0
        args = [render(a) for a in node.args]
        if node.op in ("sqrt", "maximum", "minimum"):
            text, prec = fmt[node.op] % tuple(t for t, _ in args), 0
        elif node.op == "neg":
            (t, pr), = args
            text, prec = ("-%s" if pr == 0 else "-(%s)") % t, _PREC["neg"]
        elif node.op == "where":
            c, a, b = [t if pr < _PREC["where"] else "(%s)" % t for t, pr in args]
            text = fmt["where"] % ((c, a, b) if dialect == "c" else (a, c, b))
            prec = _PREC["where"]
        else:
            prec = _PREC[node.op]
            (lt, lp), (rt, rp) = args
            # the right operand of an equal level keeps its parentheses: a - (b - c)
            lt = lt if lp <= prec else "(%s)" % lt
            rt = rt if rp < prec else "(%s)" % rt
            text = "%s %s %s" % (lt, node.op, rt)
        if uses[id(node)] > 1 and not node.boolean:
            name_ = "t%d" % len(temps)
            temps.append((name_, text))
            named[id(node)] = name_
            return name_, 0
        return text, prec

    targets = ["p"] + ["st%d" % k for k in range(n_state)]
    assignments = [(t, render(node)[0]) for t, node in zip(targets, out)]
    return TracedRule(temps, assignments, inputs)


def count_scalars(rule, n_state):
    params = list(inspect.signature(rule).parameters.values())
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise UnsupportedRuleError("rule %s takes *args: give (rule, n_state, n_scalars)"
                                   % getattr(rule, "__name__", rule))
    n = len(params) - 3 - n_state
    if n < 0:
        raise UnsupportedRuleError("rule %s has fewer than 3 + %d parameters"
                                   % (getattr(rule, "__name__", rule), n_state))
    return n
