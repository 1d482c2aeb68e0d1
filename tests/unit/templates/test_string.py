"""String functions, with the examples and outputs of template-functions-string, and uniqueString/guid
checked against values Azure produced."""

from __future__ import annotations

import re

import pytest

from kumo.providers.resources.templates.expressions import TemplateExpressionError

from .helpers import arm


def test_base64_family() -> None:
    values = {"stringData": "one, two, three", "jsonFormattedData": "{'one': 'a', 'two': 'b'}"}
    assert arm("[base64(parameters('stringData'))]", **values) == "b25lLCB0d28sIHRocmVl"
    assert arm("[base64ToString(base64(parameters('stringData')))]", **values) == "one, two, three"
    assert arm("[base64ToJson(base64(parameters('jsonFormattedData')))]", **values) == {"one": "a", "two": "b"}
    with pytest.raises(TemplateExpressionError, match="valid base64"):
        arm("[base64ToString('not base64!')]")


def test_data_uri() -> None:
    assert arm("[dataUri(parameters('stringToTest'))]", stringToTest="Hello") \
        == "data:text/plain;charset=utf8;base64,SGVsbG8="
    assert arm("[dataUriToString(parameters('dataFormattedString'))]",
               dataFormattedString="data:;base64,SGVsbG8sIFdvcmxkIQ==") == "Hello, World!"
    assert arm("[dataUriToString('data:text/plain,a%20b')]") == "a b"


def test_starts_with_and_ends_with_ignore_case() -> None:
    assert arm("[startsWith('abcdef', 'ab')]") is True
    assert arm("[startsWith('abcdef', 'A')]") is True
    assert arm("[startsWith('abcdef', 'e')]") is False
    assert arm("[endsWith('abcdef', 'ef')]") is True
    assert arm("[endsWith('abcdef', 'F')]") is True
    assert arm("[endsWith('abcdef', 'e')]") is False


def test_format() -> None:
    assert arm("[format('{0}, {1}. Formatted number: {2:N0}', parameters('greeting'), parameters('name'), "
               "parameters('numberToFormat'))]", greeting="Hello", name="User", numberToFormat=8175133) \
        == "Hello, User. Formatted number: 8,175,133"
    assert arm("[format('Hello {0}!', 'Evie')]") == "Hello Evie!"  # template-functions-lambda#map


@pytest.mark.parametrize("pattern, value, expected", [
    ("{0:N2}", 1234.5, "1,234.50"),
    ("{0:N}", -1234, "-1,234.00"),
    ("{0:F1}", 2.25, "2.3"),  # rounds half away from zero, as .NET
    ("{0:D5}", 42, "00042"),
    ("{0:X}", 255, "FF"),
    ("{0:x4}", 255, "00ff"),
    ("{0:P1}", 0.256, "25.6 %"),
    ("{0:E2}", 1234.5, "1.23E+003"),
    ("{0:000.0}", 3.14159, "003.1"),
    ("{0:#,##0}", 1234567, "1,234,567"),
    ("{0,5}|{0,-5}|", 42, "   42|42   |"),
    ("{{literal}} {0}", "x", "{literal} x"),
    ("{0}", True, "True"),
])
def test_format_specifiers(pattern: str, value: object, expected: str) -> None:
    assert arm(f"[format('{pattern}', parameters('v'))]", v=value) == expected


def test_format_errors() -> None:
    with pytest.raises(TemplateExpressionError, match=r"argument \{1\} but has only 1"):
        arm("[format('{0} {1}', 'a')]")
    with pytest.raises(TemplateExpressionError, match="unmatched"):
        arm("[format('a}', 'a')]")


def test_index_of_and_last_index_of_ignore_case() -> None:
    assert arm("[indexOf('test', 't')]") == 0
    assert arm("[lastIndexOf('test', 't')]") == 3
    assert arm("[indexOf('abcdef', 'CD')]") == 2
    assert arm("[lastIndexOf('abcdef', 'AB')]") == 0
    assert arm("[indexOf('abcdef', 'z')]") == -1


def test_join() -> None:
    assert arm("[join(variables('arrayString'), ',')]", arrayString=["one", "two", "three"]) == "one,two,three"
    assert arm("[join(variables('arrayString'), ';')]", arrayString=["one", "two", "three"]) == "one;two;three"


def test_new_guid() -> None:
    first, second = arm("[newGuid()]"), arm("[newGuid()]")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first)
    assert first != second


def test_pad_left() -> None:
    assert arm("[padLeft(parameters('testString'),10,'0')]", testString="123") == "0000000123"
    assert arm("[padLeft(7, 3)]") == "  7"
    assert arm("[padLeft('longer', 2, '0')]") == "longer"
    with pytest.raises(TemplateExpressionError, match="single padding character"):
        arm("[padLeft('1', 3, '00')]")


def test_replace() -> None:
    assert arm("[replace(parameters('testString'),'-', '')]", testString="123-123-1234") == "1231231234"
    assert arm("[replace(parameters('testString'),'1234', 'xxxx')]", testString="123-123-1234") == "123-123-xxxx"


def test_split() -> None:
    assert arm("[split(parameters('firstString'),',')]", firstString="one,two,three") == ["one", "two", "three"]
    assert arm("[split(parameters('secondString'),variables('delimiters'))]", secondString="one;two,three",
               delimiters=[",", ";"]) == ["one", "two", "three"]
    assert arm("[split('a..b', '.')]") == ["a", "", "b"]


def test_string() -> None:
    assert arm("[string(parameters('testObject'))]", testObject={"valueA": 10, "valueB": "Example Text"}) \
        == '{"valueA":10,"valueB":"Example Text"}'
    assert arm("[string(parameters('testArray'))]", testArray=["a", "b", "c"]) == '["a","b","c"]'
    assert arm("[string(parameters('testInt'))]", testInt=5) == "5"
    assert arm("[string(true())]") == "True"  # .NET's bool.ToString()
    assert arm("[string('text')]") == "text"


def test_substring() -> None:
    assert arm("[substring(parameters('testString'), 4, 3)]", testString="one two three") == "two"
    assert arm("[substring('one two three', 4)]") == "two three"
    with pytest.raises(TemplateExpressionError) as caught:
        arm("[substring(parameters('inputString'), 0, 11)]", inputString="1234567890")
    # the documented error: "... The index parameter: '0', the length parameter: '11', the length of the
    # string parameter: '10'."
    assert "The index parameter: '0', the length parameter: '11', the length of the string parameter: '10'." \
        in caught.value.message


def test_case_and_trim() -> None:
    assert arm("[toLower(parameters('testString'))]", testString="One Two Three") == "one two three"
    assert arm("[toUpper(parameters('testString'))]", testString="One Two Three") == "ONE TWO THREE"
    assert arm("[trim(parameters('testString'))]", testString="    one two three   ") == "one two three"


def test_uri_family() -> None:
    assert arm("[uri('http://contoso.com/resources/', 'nested/azuredeploy.json')]") \
        == "http://contoso.com/resources/nested/azuredeploy.json"
    assert arm("[uriComponent('http://contoso.com/resources/nested/azuredeploy.json')]") \
        == "http%3A%2F%2Fcontoso.com%2Fresources%2Fnested%2Fazuredeploy.json"
    assert arm("[uriComponentToString('http%3A%2F%2Fcontoso.com%2Fresources%2Fnested%2Fazuredeploy.json')]") \
        == "http://contoso.com/resources/nested/azuredeploy.json"


@pytest.mark.parametrize("base, expected", [
    ("http://contoso.org/firstpath", "http://contoso.org/myscript.sh"),
    ("http://contoso.org/firstpath/", "http://contoso.org/firstpath/myscript.sh"),
    ("http://contoso.org/firstpath/azuredeploy.json", "http://contoso.org/firstpath/myscript.sh"),
    ("http://contoso.org/firstpath/azuredeploy.json/", "http://contoso.org/firstpath/azuredeploy.json/myscript.sh"),
])
def test_uri_trailing_slash_rules(base: str, expected: str) -> None:
    assert arm(f"[uri('{base}', 'myscript.sh')]") == expected


# uniqueString values computed by Azure itself:
#  - 'aaa', 'bbb', 'zzz' and ('xxx', 'yyy', 'zzz'): outputs of real ARM deployments recorded in
#    github.com/KingslandConsulting/Kingsland.ArmLinter, src/Kingsland.ArmLinter/Functions/ArmFunctions_UniqueString.cs
#  - 'test': Microsoft's own Azure.Deployments.Expression package, per github.com/takekazuomi/arm-uniquestring
#    (README.md: `./out/uniqueString test` -> rbgf3xv4ufgzg)
# and by reimplementations that check themselves against Bicep/ARM output:
#  - ('hello', 'world'), 'abc', the resource group id, ('foo', 'bar', 'baz'): the self-test of a pure-bash
#    uniquestring.sh ("verified against Bicep uniqueString() output"); ('hello', 'world') also in the README of
#    github.com/JasonWhall/go-azure-uniquestring
#  - ('test', 'test2', 'test3'): github.com/cloud-maker-ai/terraform-provider-arm2tf, resource_unique_string_test.go
@pytest.mark.parametrize("args, expected", [
    (("aaa",), "zavj67f3en4hc"),
    (("bbb",), "w5eragfxe33cy"),
    (("zzz",), "cryksdzzzawae"),
    (("xxx", "yyy", "zzz"), "lghi7k5js7itq"),
    (("test",), "rbgf3xv4ufgzg"),
    (("hello", "world"), "a7wkljktk6wne"),
    (("abc",), "cgtzqvhu4i23s"),
    (("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/my-rg",), "bmg7c6xu4tw46"),
    (("foo", "bar", "baz"), "xzi4ioaxtmth4"),
    (("test", "test2", "test3"), "bqgd334z2uj64"),
])
def test_unique_string_matches_azure(args: tuple[str, ...], expected: str) -> None:
    quoted = ", ".join(f"'{a}'" for a in args)
    assert arm(f"[uniqueString({quoted})]") == expected


def test_unique_string_is_case_sensitive_and_takes_only_strings() -> None:
    assert arm("[uniqueString('Test')]") != arm("[uniqueString('test')]")
    assert arm("[uniqueString('a-b')]") == arm("[uniqueString('a', 'b')]")  # arguments are joined with '-'
    with pytest.raises(TemplateExpressionError, match="'uniqueString' expects its second parameter to be a string"):
        arm("[uniqueString('a', 1)]")


# guid(...) is the version-5 UUID of the arguments joined with '-' in the namespace
# 11fb06fb-712d-4ddd-98c7-e71bbd588830. guid('test') -> d6a5baf1-... is the single-argument test value of
# github.com/cloud-maker-ai/terraform-provider-arm2tf (resource_guid_test.go), an implementation of ARM's guid();
# no multi-argument value produced by Azure itself was found, so the '-' join is checked through its definition.
def test_guid() -> None:
    assert arm("[guid('test')]") == "d6a5baf1-8b9b-542a-8525-2982f1f98a0c"
    assert arm("[guid('a', 'b')]") == arm("[guid('a-b')]")
    assert arm("[guid('a', 'b')]") != arm("[guid('ab')]")
    value = arm("[guid(parameters('scope'), 'reader')]", scope="/subscriptions/x")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", value)
