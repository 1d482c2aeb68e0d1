"""Evaluate expressions as the documentation's example templates do, with parameters() and variables()."""

from __future__ import annotations

from typing import Any

from kumo.providers.resources.templates.expressions import evaluate_string
from kumo.providers.resources.templates.functions import PURE_FUNCTIONS


def arm(expression: str, **values: Any) -> Any:
    """Evaluate a JSON string value such as "[concat(parameters('a'), 'b')]"; parameters('x') and
    variables('x') both read the keyword argument x."""

    def lookup(args: list[Any]) -> Any:
        return values[args[0]]

    return evaluate_string(expression, {**PURE_FUNCTIONS, "parameters": lookup, "variables": lookup})
