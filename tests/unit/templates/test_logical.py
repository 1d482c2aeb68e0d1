"""Logical functions, with the examples and outputs of template-functions-logical."""

from __future__ import annotations

import pytest

from kumo.providers.resources.templates.expressions import TemplateExpressionError

from .helpers import arm


def test_and_or_not() -> None:
    assert arm("[and(bool('true'), bool('false'))]") is False
    assert arm("[or(bool('true'), bool('false'))]") is True
    assert arm("[not(bool('true'))]") is False
    assert arm("[and(true(), true(), true())]") is True
    with pytest.raises(TemplateExpressionError, match="'and' expects its second parameter to be a bool"):
        arm("[and(true(), 'true')]")
    with pytest.raises(TemplateExpressionError, match="at least 2 parameters"):
        arm("[or(true())]")


def test_bool() -> None:
    assert arm("[bool('true')]") is True
    assert arm("[bool('false')]") is False
    assert arm("[bool(1)]") is True
    assert arm("[bool(0)]") is False
    assert arm("[bool('True')]") is True
    with pytest.raises(TemplateExpressionError, match="'bool' expects"):
        arm("[bool('yes')]")


def test_true_and_false() -> None:
    assert arm("[true()]") is True
    assert arm("[false()]") is False
    with pytest.raises(TemplateExpressionError, match="expects no parameters"):
        arm("[true(1)]")


def test_if() -> None:
    assert arm("[if(equals('a', 'a'), 'yes', 'no')]") == "yes"
    assert arm("[if(equals('a', 'b'), 'yes', 'no')]") == "no"
    assert arm("""[if(equals('a', 'a'), json('{"test": "value1"}'), json('null'))]""") == {"test": "value1"}


def test_if_evaluates_only_the_branch_it_returns() -> None:
    # "The if function evaluates only the branch that is chosen" (template-functions-logical#if)
    assert arm("[if(true(), 'safe', json('not json'))]") == "safe"
    assert arm("[if(false(), parameters('undefined').x, 'else')]") == "else"
