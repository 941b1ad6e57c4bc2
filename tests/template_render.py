"""template.yaml as CloudFormation would see it for given parameter values: Conditions
evaluated, resources and outputs whose condition is false dropped, Fn::If resolved
(AWS::NoValue removed). Only the condition functions the template uses (Fn::Equals,
Fn::Not, Fn::And, Fn::Or on Refs of parameters and literals); anything else fails."""

from __future__ import annotations

import copy
from typing import Any

NO_VALUE = {"Ref": "AWS::NoValue"}
_DROP = object()


def parameter_values(template: dict[str, Any], given: dict[str, str]) -> dict[str, str]:
    values = {name: str(p["Default"]) for name, p in template.get("Parameters", {}).items()
              if "Default" in p}
    unknown = set(given) - set(template.get("Parameters", {}))
    assert not unknown, f"no such parameters: {unknown}"
    return {**values, **given}


def conditions(template: dict[str, Any], params: dict[str, str]) -> dict[str, bool]:
    defs = template.get("Conditions", {})
    done: dict[str, bool] = {}

    def value(expr: Any) -> Any:
        if isinstance(expr, dict) and set(expr) == {"Ref"}:
            return params[expr["Ref"]]
        if isinstance(expr, dict) and set(expr) == {"Condition"}:
            return condition(expr["Condition"])
        if isinstance(expr, dict):
            (fn, args), = expr.items()
            if fn == "Fn::Equals":
                return str(value(args[0])) == str(value(args[1]))
            if fn == "Fn::Not":
                return not value(args[0])
            if fn == "Fn::And":
                return all(value(a) for a in args)
            if fn == "Fn::Or":
                return any(value(a) for a in args)
            raise AssertionError(f"condition function {fn} is not supported here")
        return expr

    def condition(name: str) -> bool:
        if name not in done:
            done[name] = bool(value(defs[name]))
        return done[name]

    return {name: condition(name) for name in defs}


def _resolve_ifs(node: Any, conds: dict[str, bool]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            name, yes, no = node["Fn::If"]
            return _resolve_ifs(yes if conds[name] else no, conds)
        if node == NO_VALUE:
            return _DROP
        out = {}
        for key, value in node.items():
            resolved = _resolve_ifs(value, conds)
            if resolved is not _DROP:
                out[key] = resolved
        return out
    if isinstance(node, list):
        return [v for v in (_resolve_ifs(x, conds) for x in node) if v is not _DROP]
    return node


def render(template: dict[str, Any], **given: str) -> dict[str, Any]:
    """`template` (from ctr_infra.deploy.load_template) for parameters `given` (the
    rest at their defaults)."""
    params = parameter_values(template, given)
    conds = conditions(template, params)
    out = copy.deepcopy(template)
    for section in ("Resources", "Outputs"):
        out[section] = {name: body for name, body in out.get(section, {}).items()
                        if conds.get(body.get("Condition", ""), True)}
    return _resolve_ifs(out, conds)
