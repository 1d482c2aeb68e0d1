"""The template expression language under hostile input: any text, generated calls of every function with
extreme arguments, and expressions built to exhaust memory, time or the stack all end in a value or in
the TemplateExpressionError that deployments report as InvalidTemplate; never another exception, never
unbounded time or memory."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings

from kumo.providers.resources.templates.expressions import TemplateExpressionError, evaluate_string
from kumo.providers.resources.templates.plan import expression_error
from tests.fuzz import expressions as fx

pytestmark = pytest.mark.slow
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(fx.ANY_TEXT)
def test_any_text_gives_a_value_or_a_template_error(value: str) -> None:
    fx.check(value)


@FUZZ
@given(fx.EXPRESSIONS)
def test_generated_calls_give_a_value_or_a_template_error(value: str) -> None:
    fx.check(value)


@FUZZ
@given(fx.TYPED)
def test_well_typed_calls_with_extreme_arguments_give_a_value_or_a_template_error(value: str) -> None:
    fx.check(value)


@pytest.mark.parametrize("name", sorted(fx.BOMBS))
def test_bombs_are_refused_within_bounded_time_and_memory(name: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateExpressionError) as caught:
        evaluate_string(fx.BOMBS[name], fx.FUNCTIONS)
    assert time.monotonic() - started < fx.TIME_LIMIT
    err = expression_error("expression", caught.value)  # as a deployment reports it
    assert (err.status, err.code) == (400, "InvalidTemplate") and str(caught.value) in err.message
    if name not in fx.TIME_BOMBS:  # tracemalloc slows evaluation ~5x: measured where memory is the threat
        tracemalloc.start()
        try:
            with pytest.raises(TemplateExpressionError):
                evaluate_string(fx.BOMBS[name], fx.FUNCTIONS)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 256 * 1024 * 1024, f"{name} peaked at {peak / 1e6:.0f} MB"


def test_limits_leave_ordinary_large_values_alone() -> None:
    assert len(evaluate_string("[range(0, 10000)]", fx.FUNCTIONS)) == 10000
    assert len(evaluate_string("[padLeft('a', 100000, 'x')]", fx.FUNCTIONS)) == 100000
    assert len(evaluate_string("[string(range(0, 10000))]", fx.FUNCTIONS)) == 48891
    nested = "[" + "concat(" * 40 + "'a'" + ")" * 40 + "]"
    assert evaluate_string(nested, fx.FUNCTIONS) == "a"
