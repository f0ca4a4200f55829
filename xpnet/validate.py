"""Small argument checks shared by xpnet's modules: one meaning of "a positive int"
(or "a positive number") for the nets, the trainer, the command line, the bench
and the examples, and one wording of the error.

    positive_int(v, "hidden_size")          # Python values: TypeError / ValueError
    parse_int("12", "--repeats")            # command-line text as well
    p.add_argument("--epochs", type=arg_type(parse_int, allow_zero=True))

Every message reads ``"<what> must be <rule>, got <value>"``; with ``what=None``
it reads ``"expected <rule>, got <value>"`` (argparse names the option itself).

This module must never import other xpnet modules or an array library
(everything may import it), print, or exit.
"""
import argparse
import math
import operator

__all__ = ["positive_int", "positive_float", "fraction", "parse_int", "parse_float",
           "arg_type"]


def _error(kind, what, rule, got):
    if what is None:
        return kind("expected %s, got %r" % (rule, got))
    return kind("%s must be %s, got %r" % (what, rule, got))


def _int_rule(allow_zero):
    return "an int >= 0" if allow_zero else "a positive int"


def _float_rule(allow_zero):
    return "a number >= 0" if allow_zero else "a positive number"


def positive_int(v, what, allow_zero=False):
    """`v` as an int >= 1 (>= 0 with `allow_zero`). TypeError for bools and
    non-integers (4.5, '4'), ValueError when it is too small."""
    rule = _int_rule(allow_zero)
    if isinstance(v, bool):   # an int subclass, but never meant as a count
        raise _error(TypeError, what, rule, v)
    try:
        i = operator.index(v)   # ints and integer scalars (NumPy's) only, no floats
    except TypeError:
        raise _error(TypeError, what, rule, v) from None
    if i < (0 if allow_zero else 1):
        raise _error(ValueError, what, rule, i)
    return i


def _real(v, what, rule):
    # numbers and NumPy scalars; bools and text are never taken for numbers
    if isinstance(v, (bool, str, bytes)):
        raise _error(TypeError, what, rule, v)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise _error(TypeError, what, rule, v) from None


def positive_float(v, what, allow_zero=False):
    """`v` as a finite float > 0 (>= 0 with `allow_zero`). TypeError for bools and
    non-numbers, ValueError for NaN, infinities and values too small."""
    rule = _float_rule(allow_zero)
    f = _real(v, what, rule)
    if not (math.isfinite(f) and (f >= 0 if allow_zero else f > 0)):
        raise _error(ValueError, what, rule, v)
    return f


def fraction(v, what, closed=False):
    """`v` as a float in [0, 1) ([0, 1] with `closed`): dropout ratios, momenta, betas.
    TypeError for bools, text and non-numbers; ValueError for NaN and values outside."""
    rule = "a number in [0, 1]" if closed else "a number in [0, 1)"
    f = _real(v, what, rule)
    if not (0.0 <= f <= 1.0 if closed else 0.0 <= f < 1.0):
        raise _error(ValueError, what, rule, v)
    return f


def parse_int(v, what, allow_zero=False):
    """`positive_int` that also reads text (``'12'``, as from a command line);
    text that is no integer, or too small, is a ValueError quoting the text."""
    if not isinstance(v, str):
        return positive_int(v, what, allow_zero)
    try:
        return positive_int(int(v.strip()), what, allow_zero)
    except ValueError:
        raise _error(ValueError, what, _int_rule(allow_zero), v) from None


def parse_float(v, what, allow_zero=False):
    """`positive_float` that also reads text (``'1e-3'``)."""
    if not isinstance(v, str):
        return positive_float(v, what, allow_zero)
    try:
        return positive_float(float(v), what, allow_zero)
    except ValueError:
        raise _error(ValueError, what, _float_rule(allow_zero), v) from None


def arg_type(parse, allow_zero=False):
    """An argparse ``type=`` from `parse_int` or `parse_float`: a bad value exits
    with status 2 and ``argument --x: expected a positive int, got '0'``."""
    def convert(text):
        try:
            return parse(text, None, allow_zero)
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert
