"""The template functions that need no deployment context, keyed by lower-case name. The deployment
engine adds its own (parameters, variables, resourceId, reference, copyIndex, ...) on top."""

from __future__ import annotations

from ..expressions import Function
from .array import FUNCTIONS as _array
from .comparison import FUNCTIONS as _comparison
from .date import FUNCTIONS as _date
from .lambdas import FUNCTIONS as _lambdas
from .logical import FUNCTIONS as _logical
from .numeric import FUNCTIONS as _numeric
from .object import FUNCTIONS as _object
from .string import FUNCTIONS as _string


def _combine(*families: dict[str, Function]) -> dict[str, Function]:
    combined: dict[str, Function] = {}
    for family in families:
        clash = combined.keys() & family.keys()
        if clash:  # a function shared by families must be defined once, accepting all their types
            raise RuntimeError(f"template functions defined twice: {sorted(clash)}")
        combined.update(family)
    return combined


PURE_FUNCTIONS: dict[str, Function] = _combine(_array, _comparison, _date, _lambdas, _logical, _numeric, _object,
                                               _string)

__all__ = ["PURE_FUNCTIONS"]
