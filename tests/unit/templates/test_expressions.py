"""The template expression language: tokenizer, parser, evaluator, and errors with positions."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from kumo.providers.resources.templates.expressions import (
    Call,
    Index,
    Literal,
    Property,
    TemplateExpressionError,
    evaluate,
    evaluate_json,
    evaluate_string,
    is_expression,
    parse,
    tokenize,
    unescape,
)
from kumo.providers.resources.templates.functions import PURE_FUNCTIONS

from .helpers import arm


def error_of(expression: str, **values: Any) -> TemplateExpressionError:
    with pytest.raises(TemplateExpressionError) as caught:
        arm(expression, **values)
    return caught.value


# --- strings that are (not) expressions -----------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("[concat('a')]", True), ("[[concat('a')]", False), ("plain", False), ("[starts only", False),
    ("ends only]", False), ("[", False), ("", False), ("[x]", True),
])
def test_is_expression(value: str, expected: bool) -> None:
    assert is_expression(value) is expected


def test_escaped_brackets_are_literals() -> None:
    # "[[test value]" resolves to "[test value]" (template-expressions); "[[1,2,3 ]" is json.json's array
    assert unescape("[[test value]") == "[test value]"
    assert unescape("[[1,2,3 ]") == "[1,2,3 ]"
    assert unescape("plain [text]") == "plain [text]"
    assert evaluate_string("[[concat('a')]", PURE_FUNCTIONS) == "[concat('a')]"
    assert evaluate_string("no expression", PURE_FUNCTIONS) == "no expression"
    assert arm("[json(parameters('jsonArray'))]", jsonArray=unescape("[[1,2,3 ]")) == [1, 2, 3]


# --- tokenizer and parser -------------------------------------------------------------------------


def test_tokens_carry_kinds_values_and_one_based_positions() -> None:
    tokens = tokenize("concat('it''s', -12)[0]?.x")
    assert [(t.kind, t.value, t.pos) for t in tokens] == [
        ("name", "concat", 1), ("(", "(", 7), ("string", "it's", 8), (",", ",", 15), ("int", -12, 17),
        (")", ")", 20), ("[", "[", 21), ("int", 0, 22), ("]", "]", 23), ("?.", "?.", 24), ("name", "x", 26),
        ("eof", None, 27),
    ]


def test_parse_builds_calls_properties_and_indexes() -> None:
    node = parse("parameters('vnet').subnets[1]?.name")
    assert node == Property(Index(Property(Call("parameters", (Literal("vnet", 12),), 1), "subnets", 19, False),
                                  Literal(1, 28), 27, False), "name", 30, True)


def test_parse_is_cached_per_text() -> None:
    assert parse("concat('cached', 'text')") is parse("concat('cached', 'text')")


def test_whitespace_and_newlines_between_tokens() -> None:
    assert arm("[ concat( 'a' ,\n  'b' ) ]") == "ab"


def test_string_literals_escape_quotes_by_doubling() -> None:
    assert arm("['it''s']") == "it's"
    assert arm("['']") == ""


def test_integer_literals_include_negative_numbers() -> None:
    assert arm("[add(-3, 10)]") == 7
    assert arm("[42]") == 42


def test_function_names_are_case_insensitive() -> None:
    assert arm("[CONCAT('a', toUPPER('b'))]") == "aB"


def test_user_defined_functions_are_called_by_namespace_and_name() -> None:
    functions = {**PURE_FUNCTIONS, "contoso.greet": lambda args: f"hello {args[0]}"}
    assert evaluate_string("[contoso.greet('kumo')]", functions) == "hello kumo"
    assert evaluate_string("[Contoso.Greet('x')]", functions) == "hello x"


# --- evaluation -----------------------------------------------------------------------------------


def test_property_access_is_case_insensitive_and_chains() -> None:
    settings = {"Storage": {"SKU": {"name": "Standard_LRS"}}, "zones": ["1", "2"]}
    assert arm("[parameters('s').storage.sku.Name]", s=settings) == "Standard_LRS"
    assert arm("[parameters('s')['storage']['SKU'].name]", s=settings) == "Standard_LRS"
    assert arm("[parameters('s').zones[1]]", s=settings) == "2"
    assert arm("""[json('{"a": {"b": [1, 2]}}').a.b[1]]""") == 2
    assert arm("[createArray('x', 'y')[add(0, 1)]]") == "y"


def test_missing_property_names_it_and_the_available_ones() -> None:
    error = error_of("[parameters('o').nmae]", o={"name": 1, "kind": 2})
    assert "'nmae' doesn't exist" in str(error) and "name, kind" in str(error)
    assert error.position == 17


def test_out_of_range_index_and_wrong_index_types_are_errors() -> None:
    assert "index '3' is out of bounds" in str(error_of("[createArray(1, 2)[3]]"))
    assert "indexed by an integer" in str(error_of("[createArray(1, 2)['a']]"))
    assert "indexed by a string" in str(error_of("[json('{}')[0]]"))
    assert "null" in str(error_of("[null().name]"))


def test_null_safe_access_returns_null_and_short_circuits_the_chain() -> None:
    value = {"a": {"b": 1}, "list": [1]}
    assert arm("[parameters('v')?.missing]", v=value) is None
    assert arm("[parameters('v')?.missing.deeper[0].still]", v=value) is None
    assert arm("[parameters('v').a?.b]", v=value) == 1
    assert arm("[parameters('v').list?[5]]", v=value) is None
    assert arm("[null()?.x]") is None
    assert arm("[coalesce(parameters('v')?.tags, 'none')]", v=value) == "none"


def test_if_evaluates_only_the_chosen_branch() -> None:
    assert arm("[if(equals('a', 'a'), 'yes', div(1, 0))]") == "yes"
    assert arm("[if(false(), parameters('missing').x, 'no')]") == "no"
    assert "condition to be a bool" in str(error_of("[if('true', 1, 2)]"))
    assert "exactly 3 parameters" in str(error_of("[if(true(), 1)]"))


def test_lambdas_bind_their_variables() -> None:
    assert arm("[map(createArray(1, 2, 3), lambda('x', mul(lambdaVariables('x'), 10)))]") == [10, 20, 30]
    assert arm("[map(createArray('a', 'b'), lambda('x', 'i', concat(lambdaVariables('x'), "
               "string(lambdaVariables('i')))))]") == ["a0", "b1"]
    # an inner lambda sees the outer one's variables
    assert arm("[map(createArray(1, 2), lambda('x', map(createArray(10), lambda('y', "
               "add(lambdaVariables('x'), lambdaVariables('y'))))))]") == [[11], [12]]


def test_lambda_misuse_is_reported() -> None:
    assert "not defined" in str(error_of("[lambdaVariables('x')]"))
    assert "not defined" in str(error_of("[map(createArray(1), lambda('x', lambdaVariables('y')))]"))
    assert "string literal" in str(error_of("[map(createArray(1), lambda(concat('x'), 1))]"))
    assert "can only be passed" in str(error_of("[lambda('x', 1)]"))
    assert "lambda with 2 variable" in str(error_of("[sort(createArray(1), lambda('x', true()))]"))


def test_evaluate_takes_a_parsed_node() -> None:
    assert evaluate(parse("concat('a', string(add(1, 2)))"), PURE_FUNCTIONS) == "a3"
    with pytest.raises(TemplateExpressionError) as caught:
        evaluate(parse("concat('a', nope())"), PURE_FUNCTIONS)
    assert caught.value.position == 13  # relative to the parsed text


def test_evaluate_json_evaluates_every_string_and_key_once() -> None:
    template = {
        "[concat('name', '1')]": "[toUpper('value')]",
        "list": ["[add(1, 2)]", "[[literal]", 7, None, True, {"inner": "[concat('[', 'x()', ']')]"}],
    }
    assert evaluate_json(template, PURE_FUNCTIONS) == {
        "name1": "VALUE",
        "list": [3, "[literal]", 7, None, True, {"inner": "[x()]"}],  # results are not evaluated again
    }
    with pytest.raises(TemplateExpressionError, match="must evaluate to a string"):
        evaluate_json({"[add(1, 2)]": 1}, PURE_FUNCTIONS)


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("expression, position, fragment", [
    ("[concat('a', 'b]", 14, "not terminated"),
    ("[concat('a' 'b')]", 13, "Expected ',' or ')'"),
    ("[concat('a', ]", 14, "Expected a function call, a string or an integer"),
    ("[concat('a'", None, None),  # not an expression at all: no closing bracket
    ("[concat(,)]", 9, "Expected a function call"),
    ("[concat('a'))]", 13, "expected the end of the expression"),
    ("[true]", 2, "use true(), false() or null()"),
    ("[add(1.5, 1)]", 6, "no floating-point literals"),
    ("[add(1, 2) # comment]", 12, "The character '#'"),
    ("[json('{}').]", 13, "Expected a property name after '.'"),
    ("[createArray(1)[0]", 18, "Expected ']' to close the index"),
    ("[createArray(1)[0 1]]", 19, "Expected ']'"),
    ("[]", 2, "is empty"),
    ("[   ]", 5, "is empty"),
])
def test_malformed_expressions_report_what_and_where(expression: str, position: int | None,
                                                     fragment: str | None) -> None:
    if fragment is None:
        assert arm(expression) == expression  # without the closing ']' it is a plain string
        return
    error = error_of(expression)
    assert fragment in error.message
    assert error.position == position and error.expression == expression
    assert f"at character {position} of '{expression}'" in str(error)


def test_unknown_functions_are_named_with_their_position() -> None:
    error = error_of("[concat('a', frobnicate(1))]")
    assert error.message.startswith("The template function 'frobnicate' is not valid.")
    assert error.position == 14


def test_function_errors_point_at_the_innermost_call() -> None:
    error = error_of("[concat('a', string(add(1, 'x')))]")
    assert "'add' expects its second parameter to be an integer, got string" in error.message
    assert error.position == 21


def test_python_errors_in_context_functions_become_template_errors() -> None:
    functions = {**PURE_FUNCTIONS, "parameters": lambda args: {"a": 1}[args[0]]}
    with pytest.raises(TemplateExpressionError) as caught:
        evaluate_string("[concat('x', parameters('b'))]", functions)
    assert "The template function 'parameters' failed" in caught.value.message
    assert caught.value.position == 14


def test_errors_pickle_with_their_position() -> None:
    error = error_of("[nope()]")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.position, copy.expression) == (error.message, 2, "[nope()]")
    assert str(copy) == str(error)
    assert str(TemplateExpressionError("plain")) == "plain"
