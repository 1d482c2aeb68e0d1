"""Numeric functions, with the examples and outputs of template-functions-numeric."""

from __future__ import annotations

import pytest

from kumo.providers.resources.templates.expressions import TemplateExpressionError

from .helpers import arm


def test_documented_examples() -> None:
    assert arm("[add(parameters('first'), parameters('second'))]", first=5, second=3) == 8
    assert arm("[sub(parameters('first'), parameters('second'))]", first=7, second=3) == 4
    assert arm("[mul(mul(parameters('first'), parameters('second')), 3)]", first=5, second=3) == 45
    assert arm("[div(parameters('first'), parameters('second'))]", first=8, second=3) == 2
    assert arm("[mod(parameters('first'), parameters('second'))]", first=7, second=3) == 1
    assert arm("[int(parameters('stringToConvert'))]", stringToConvert="4") == 4
    assert arm("[float('3.0')]") == 3.0
    assert arm("[float(3)]") == 3.0


def test_min_and_max_take_arrays_or_lists() -> None:
    assert arm("[max(parameters('arrayToTest'))]", arrayToTest=[0, 3, 2, 5, 4]) == 5
    assert arm("[max(0,3,2,5,4)]") == 5
    assert arm("[min(parameters('arrayToTest'))]", arrayToTest=[0, 3, 2, 5, 4]) == 0
    assert arm("[min(0,3,2,5,4)]") == 0
    with pytest.raises(TemplateExpressionError, match="'max' expects at least one integer"):
        arm("[max(createArray())]")


def test_division_truncates_toward_zero_as_dotnet() -> None:
    assert arm("[div(-7, 2)]") == -3
    assert arm("[div(7, -2)]") == -3
    assert arm("[mod(-7, 2)]") == -1
    assert arm("[mod(7, -2)]") == 1
    with pytest.raises(TemplateExpressionError, match="'div' can't divide by zero") as caught:
        arm("[div(1, 0)]")
    assert caught.value.position == 2


def test_integers_only_and_64_bit() -> None:
    with pytest.raises(TemplateExpressionError, match="'add' expects its first parameter to be an integer, got string"):
        arm("[add('1', 2)]")
    with pytest.raises(TemplateExpressionError, match="64-bit"):
        arm("[mul(9223372036854775807, 2)]")
    assert arm("[int(' -12 ')]") == -12
    assert arm("[int(float('2.5'))]") == 2  # .NET rounds half to even
    with pytest.raises(TemplateExpressionError, match="'int' expects"):
        arm("[int('4.5')]")
