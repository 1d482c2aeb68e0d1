"""Template parameters: binding the values a deployment supplies to the template's declarations,
with defaults (which may be expressions over earlier parameters) and Azure's checks: type,
allowedValues, minValue/maxValue, minLength/maxLength. Secure values are bound like others but
never shown again (see `public_parameters`)."""

from __future__ import annotations

from typing import Any

from kumo.providers.resources.templates.context import NeedsReference
from kumo.providers.resources.templates.expressions import Function, TemplateExpressionError, evaluate_json
from kumo.providers.resources.templates.plan import invalid_template

TYPES = {"string": "String", "securestring": "SecureString", "int": "Int", "bool": "Bool", "object": "Object",
         "secureobject": "SecureObject", "array": "Array"}
SECURE = {"securestring", "secureobject"}


def _fits(kind: str, value: Any) -> bool:
    if kind in ("string", "securestring"):
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("object", "secureobject"):
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    return False


def bind(declared: dict[str, Any], supplied: dict[str, Any],
         functions_for: Any) -> dict[str, Any]:
    """Values for every declared parameter. `functions_for(bound)` gives the function table with the
    parameters bound so far, for defaultValue expressions."""
    if not isinstance(declared, dict) or not isinstance(supplied, dict):
        raise invalid_template("'parameters' must be an object")
    names = {n.lower(): n for n in declared}
    extra = [n for n in supplied if n.lower() not in names]
    if extra:
        raise invalid_template(f"The template parameters '{', '.join(extra)}' in the parameters file are not valid; "
                               "they are not present in the original template and can therefore not be provided at "
                               "deployment time. The only supported parameters for this template are "
                               f"'{', '.join(declared)}'")
    given = {n.lower(): v for n, v in supplied.items()}
    bound: dict[str, Any] = {}
    for name, decl in declared.items():
        if not isinstance(decl, dict) or str(decl.get("type", "")).lower() not in TYPES:
            raise invalid_template(f"The template parameter '{name}' needs a type: one of "
                                   f"{', '.join(TYPES.values())}")
        kind = str(decl["type"]).lower()
        if name.lower() in given:
            entry = given[name.lower()]
            if not isinstance(entry, dict) or "value" not in entry:
                what = "Key Vault references are not supported by kumo" if isinstance(entry, dict) and \
                    "reference" in entry else "it must be an object with a 'value'"
                raise invalid_template(f"The value for the template parameter '{name}' is not valid: {what}")
            value = entry["value"]
        elif "defaultValue" in decl:
            functions: dict[str, Function] = functions_for(bound)
            try:
                value = evaluate_json(decl["defaultValue"], functions)
            except TemplateExpressionError as e:
                raise invalid_template(f"The default value of template parameter '{name}' is not valid: {e}") from None
            except NeedsReference:
                raise invalid_template(f"The default value of template parameter '{name}' is not valid: the "
                                       "function 'reference' is not expected here") from None
        else:
            raise invalid_template(f"The value for the template parameter '{name}' is not provided. Please see "
                                   "https://aka.ms/resource-manager-parameter-files for usage details")
        bound[name] = check(name, kind, decl, value)
    return bound


def _jtoken(value: Any) -> str:
    """The JSON type's name as Azure's messages say it."""
    for kind, name in ((bool, "Boolean"), (int, "Integer"), (str, "String"), (dict, "Object"), (list, "Array")):
        if isinstance(value, kind):
            return name
    return "Null" if value is None else "Float"


def check(name: str, kind: str, decl: dict[str, Any], value: Any) -> Any:
    if not _fits(kind, value):
        expected = {"securestring": "String", "int": "Integer", "bool": "Boolean", "secureobject": "Object"}.get(
            kind, TYPES[kind])
        raise invalid_template(f"Template parameter JToken type is not valid for parameter '{name}'. Expected "
                               f"'{expected}'. Actual '{_jtoken(value)}'. Please see "
                               "https://aka.ms/resource-manager-parameter-files for usage details")
    allowed = decl.get("allowedValues")
    if isinstance(allowed, list):
        values = value if kind == "array" else [value]
        bad = [v for v in values if v not in allowed]
        if bad:
            shown = "" if kind in SECURE else f"'{bad[0]}' "
            listed = ", ".join(map(str, allowed))
            raise invalid_template(f"The provided value {shown}for the template parameter '{name}' is not valid. The "
                                   f"parameter value is not part of the allowed value(s): '{listed}'")
    if kind == "int":
        if "minValue" in decl and value < decl["minValue"]:
            raise invalid_template(f"The provided value for the template parameter '{name}' is not valid. The "
                                   f"value must be at least {decl['minValue']}")
        if "maxValue" in decl and value > decl["maxValue"]:
            raise invalid_template(f"The provided value for the template parameter '{name}' is not valid. The "
                                   f"value must be at most {decl['maxValue']}")
    if kind in ("string", "securestring", "array"):
        if "minLength" in decl and len(value) < decl["minLength"]:
            raise invalid_template(f"The provided value for the template parameter '{name}' is not valid. Length "
                                   f"of the value should be greater than or equal to '{decl['minLength']}'")
        if "maxLength" in decl and len(value) > decl["maxLength"]:
            raise invalid_template(f"The provided value for the template parameter '{name}' is not valid. Length "
                                   f"of the value should be less than or equal to '{decl['maxLength']}'")
    return value


def public_parameters(declared: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """What GET shows: each parameter's type and value; secure ones without their value."""
    out = {}
    for name, value in values.items():
        kind = str((declared.get(name) or {}).get("type", "string")).lower()
        out[name] = {"type": TYPES.get(kind, "String")} if kind in SECURE else {"type": TYPES.get(kind, "String"),
                                                                                  "value": value}
    return out
