"""Every JSONPath statemachine/pipeline.asl.json reads, checked against the model of
the step that produced it (ctr.steps), so renaming a result field breaks this test,
not a run.

`check_machine` walks the state machine the way Step Functions moves data: it starts
from the execution input, and each state's ResultSelector/ResultPath/OutputPath (or a
Catch's ResultPath) turns its input schema into the input schema of the states it
leads to; where paths join, the schemas are merged (a key is certain only when every
path sets it). A Lambda Task's result is the JSON schema of its step's result model,
found from the FunctionName substitution and the Payload's action (`result_model_name`).
Then every path a state reads -- Choice variables, `.$` values of Parameters,
ResultSelector and ItemReader, InputPath/OutputPath/ItemsPath, a Fail's
ErrorPath/CausePath -- must resolve:

- its first key is set on every path into the state (or the read is an IsPresent test,
  or the edge into the state passed an IsPresent test of it);
- the rest exists in every shape the producer can return (each branch of a union;
  `X | None` may be null, not a missing key), $ref/$defs followed;
- a Choice comparison's type and constant fit the field (BooleanEquals on a boolean,
  StringEquals "exhausted" on a status whose values include "exhausted").

Paths into the context object (`$$.`), the execution input, an S3 ItemReader's items
and the raw lambda:invoke response are checked against the small declared schemas
below. The keys each Task passes in its Payload must be fields of the step's event
model. And the keys `ctr runs` and the integration tests read from a finished
execution's output must exist in what the succeeding ends can hold.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
import pytest

from ctr import layout, steps

ROOT = Path(__file__).resolve().parents[2]
MACHINE_FILES = sorted((ROOT / "statemachine").glob("*.asl.json"))
ASLS = {path.name: json.loads(path.read_text()) for path in MACHINE_FILES}
ASL = ASLS["pipeline.asl.json"]

Schema = dict[str, Any]
ANY: Schema = {}


# --------------------------------------------------------------------------- declared schemas

def _obj(title: str, **props: Schema) -> Schema:
    return {"title": title, "type": "object", "properties": props,
            "required": sorted(props), "additionalProperties": False}


STR, INT = {"type": "string"}, {"type": "integer"}
# The pipeline is started with {} (ctr run, the tests) or by the EventBridge schedule;
# no state reads anything of it.
EXECUTION_INPUT = _obj("the execution input")
# `ctr score` starts the scoring machine with these four keys (null = the default).
SCORE_INPUT = _obj("the scoring execution input", input_key=STR, output_prefix=STR,
                   range_bytes={"anyOf": [INT, {"type": "null"}]},
                   max_concurrency={"anyOf": [INT, {"type": "null"}]})
CONTEXT = _obj("the context object",
               Execution=_obj("$$.Execution", Id=STR, Name=STR, StartTime=STR, RoleArn=STR,
                              Input=ANY),
               State=_obj("$$.State", Name=STR, EnteredTime=STR, RetryCount=INT),
               StateMachine=_obj("$$.StateMachine", Id=STR, Name=STR))
ERROR_OUTPUT = _obj("a Catch's error output", Error=STR, Cause=STR)
ITEM_READERS = {"arn:aws:states:::s3:listObjectsV2": _obj(
    "an S3 ListObjectsV2 item", Key=STR, ETag=STR, LastModified=STR, Size=INT,
    StorageClass=STR),
    # the only JSON array the machine reads from S3: a backfill plan (ctr.backfill)
    "arn:aws:states:::s3:getObject": {"title": "a backfill plan item", **{
        k: v for k, v in pydantic.TypeAdapter(steps.BackfillRange).json_schema(
            mode="serialization").items() if k != "title"}}}
# Task states that call no Lambda (TrainBackend=sagemaker's pipeline): what they return.
# A GetObject's Body is the JSON of the step result model named after the key's prefix,
# which States.StringToJson($.Body) turns back into that model.
JOB_OUTPUT = _obj("a DescribeTrainingJob response (the .sync result)", TrainingJobName=STR,
                  TrainingJobArn=STR, TrainingJobStatus=STR, SecondaryStatus=STR,
                  BillableTimeInSeconds=INT, TrainingTimeInSeconds=INT)
SERVICE_TASKS = {"arn:aws:states:::sagemaker:createTrainingJob.sync": JOB_OUTPUT}
S3_JSON_OBJECTS = {layout.TRAIN_RESULTS_PREFIX: "TrainResult"}


def lambda_invoke_output(payload: Schema) -> Schema:
    """What arn:aws:states:::lambda:invoke returns around the function's result."""
    return _obj("a lambda:invoke response", Payload=payload, StatusCode=INT,
                ExecutedVersion=STR, SdkHttpMetadata=ANY, SdkResponseMetadata=ANY)


# --------------------------------------------------------------------------- schemas of models

def inline_refs(schema: Any, defs: Mapping[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """`schema` with every {"$ref": "#/$defs/X"} replaced by X (a recursive one by ANY)."""
    if isinstance(schema, list):
        return [inline_refs(s, defs, seen) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return ANY if name in seen else inline_refs(defs[name], defs, (*seen, name))
    return {k: inline_refs(v, defs, seen) for k, v in schema.items() if k != "$defs"}


def json_schema(model: Any, title: str) -> Schema:
    """The serialized (model_dump) JSON schema of a model or union alias, refs inlined;
    `title` names a union alias (a model keeps its class name)."""
    raw = pydantic.TypeAdapter(model).json_schema(mode="serialization")
    return {"title": title, **inline_refs(raw, raw.get("$defs", {}))}


# --------------------------------------------------------------------------- JSONPath

_SEGMENT = re.compile(r"\.([A-Za-z_][\w-]*)|\['([^']+)'\]|\[(\d+|\*)\]")


def parse_path(path: str) -> tuple[str, list[str | int]]:
    """('$' or '$$', segments) of a JSONPath like $.a.b[0].c or $$.Execution.Name."""
    base = "$$" if path.startswith("$$") else "$"
    rest, segments, at = path[len(base):], [], 0
    while at < len(rest):
        m = _SEGMENT.match(rest, at)
        if not m:
            raise ValueError(f"unsupported JSONPath {path!r}")
        name, quoted, index = m.groups()
        segments.append(name or quoted or (int(index) if index.isdigit() else "*"))
        at = m.end()
    return base, segments


class Unresolved(Exception):
    pass


def branches(schema: Schema) -> list[Schema]:
    """The non-null shapes a value of `schema` can have (unions flattened)."""
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [b for s in schema[key] for b in branches(s)]
    if schema.get("type") == "null":
        return []
    return [schema]


def child(schema: Schema, segment: str | int) -> Schema:
    """The schema of `segment` inside one (non-union) shape; Unresolved if it has none."""
    if segment == "*" or isinstance(segment, int):
        if schema.get("type") == "array" or "items" in schema:
            return schema.get("items", ANY)
    elif "properties" in schema and segment in schema["properties"]:
        return schema["properties"][segment]
    elif isinstance(schema.get("additionalProperties"), dict):
        return schema["additionalProperties"]
    if not schema.keys() - {"title", "description", "x-from"}:
        return ANY                                       # an untyped value: anything goes
    fields = ", ".join(schema.get("properties", {})) or "none"
    raise Unresolved(f"no {segment!r} in {schema.get('title', 'the value')} "
                     f"(its fields: {fields})")


def resolve(schema: Schema, segments: list[str | int],
            every: bool = True) -> list[Schema]:
    """The leaf schemas of `segments` inside `schema`. `every`: the path must exist in
    every shape of a union (a missing path fails the execution at run time); else in
    at least one (a reader that uses .get)."""
    nodes = [schema]
    for segment in segments:
        found, missing = [], []
        for node in nodes:
            for shape in branches(node):
                try:
                    found.append(child(shape, segment))
                except Unresolved as err:
                    missing.append(str(err))
        if (every and missing) or not found:
            raise Unresolved("; ".join(dict.fromkeys(missing)) or f"{segment!r} is always null")
        nodes = found
    return nodes


# --------------------------------------------------------------------------- data flow

def set_path(doc: Schema, result_path: str | None, value: Schema) -> Schema:
    """The state output: `value` placed into `doc` at ResultPath (null keeps `doc`)."""
    if result_path is None:
        return doc
    _, segments = parse_path(result_path)
    if not segments:
        return value
    out = copy.deepcopy(doc) if doc.get("type") == "object" else _obj("state output")
    node = out
    for i, segment in enumerate(segments):
        assert isinstance(segment, str), f"ResultPath {result_path} indexes an array"
        node.setdefault("properties", {})
        node["required"] = sorted({*node.get("required", []), segment})
        if i == len(segments) - 1:
            node["properties"][segment] = value
        else:
            node = node["properties"].setdefault(segment, _obj(f"$.{segment}"))
    return out


def join(a: Schema, b: Schema) -> Schema:
    """Data arriving by either of two paths: top-level keys certain only if both set
    them; a key set differently by each path can be either shape."""
    if a == b:
        return a
    if a.get("type") == b.get("type") == "object" and "properties" in a and "properties" in b:
        props = dict(a["properties"])
        for key, value in b["properties"].items():
            props[key] = value if key not in props else join_values(props[key], value)
        return {**a, "properties": props,
                "required": sorted(set(a.get("required", [])) & set(b.get("required", [])))}
    return {"anyOf": [a, b]}


def join_values(a: Schema, b: Schema) -> Schema:
    strip = lambda s: {k: v for k, v in s.items() if k != "x-from"}  # noqa: E731
    if strip(a) == strip(b):
        return {**a, "x-from": sorted({*a.get("x-from", []), *b.get("x-from", [])})}
    return {"anyOf": [a, b]}


def produced(value: Schema, state: str) -> Schema:
    return {**value, "x-from": [state]}


# --------------------------------------------------------------------------- the models of a Task

# Result model per (function, Payload action) where the derived name is not the best.
RESULT_MODEL_TABLE: dict[tuple[str, str | None], str] = {
    ("Guard", "release"): "LeaseReleased",     # GuardResult would also allow a lease
    ("Score", "plan"): "ScorePlan",            # PlanResult is the aggregate step's
    ("Score", "range"): "ScoredRange",
    ("Score", "manifest"): "ScoreManifest",
    ("Chunk", "plan_backfill"): "BackfillPlan",
    ("Chunk", "cut_range"): "RangeCut",
    ("Chunk", "finish_backfill"): "BackfillFinished",
}
# Payload keys that are no field of the step's event model, and why that is right
# (each claim is checked by test_payload_keys_outside_the_event_schemas_are_what_we_say).
PAYLOAD_KEYS_OUTSIDE_THE_SCHEMA = {
    ("Chunk", "execution"): "ignored: the calling execution's name, seen in the invoke event",
    ("Reload", "execution"): "ignored: the calling execution's name, seen in the invoke event",
    ("Aggregate", "key"): "read into `indices` by AggregateEvent's before-validator",
}


def function_of(state: Mapping[str, Any]) -> tuple[str, str | None]:
    """('Guard', 'acquire') from FunctionName "${GuardFunctionArn}" and Payload action."""
    params = state.get("Parameters", {})
    m = re.fullmatch(r"\$\{(\w+?)FunctionArn\}", str(params.get("FunctionName", "")))
    assert m, f"FunctionName {params.get('FunctionName')!r} is not a ${{XFunctionArn}}"
    return m.group(1), params.get("Payload", {}).get("action")


def result_model_name(models: Mapping[str, Any], function: str, action: str | None) -> str:
    """RESULT_MODEL_TABLE, else <Action>Result (PlanResult, AcquireResult), else
    <Function>Result (ChunkResult)."""
    candidates = [RESULT_MODEL_TABLE.get((function, action)),
                  f"{action.title()}Result" if action else None, f"{function}Result"]
    found = [c for c in candidates if c and c in models]
    assert found, f"no result model for {function} {action or ''}: tried {candidates}"
    return found[0]


# --------------------------------------------------------------------------- the walk

Problem = str
CHOICE_TYPES = {"String": {"string"}, "Numeric": {"number", "integer"},
                "Boolean": {"boolean"}, "Timestamp": {"string"}}


class Walk:
    """One pass over a state machine (and the sub-machines of its Map states)."""

    def __init__(self, models: Mapping[str, Any]) -> None:
        self.models = models
        self.problems: list[Problem] = []
        self.reads = 0
        self.report = True

    # -- reads

    def read(self, where: str, path: str, doc: Schema, context: Schema,
             mode: Literal["certain", "maybe"] = "certain") -> list[Schema]:
        """Resolve `path` in the state's data `doc` (or `context` for $$.); a problem
        is recorded (once the flow is settled) and ANY returned if it does not."""
        try:
            base, segments = parse_path(path)
            if base == "$$":
                return resolve(context, segments)
            if segments and isinstance(segments[0], str):
                root = segments[0]
                certain = root in doc.get("required", [])
                if mode == "certain" and not certain:
                    known = root in doc.get("properties", {})
                    raise Unresolved(f"$.{root} is not set on every path into the state"
                                     if known else f"nothing sets $.{root} before this state")
                if root in doc.get("properties", {}):
                    value = doc["properties"][root]
                    by = " or ".join(repr(s) for s in value.get("x-from", []))
                    try:
                        return resolve(value, segments[1:])
                    except Unresolved as err:
                        raise Unresolved(f"{err}; $.{root} is set by {by}" if by else str(err)
                                         ) from None
            return resolve(doc, segments)
        except (Unresolved, ValueError) as err:
            self.problem(f"{where}: {path}: {err}")
            return [ANY]
        finally:
            self.reads += self.report

    def problem(self, text: str) -> None:
        if self.report:
            self.problems.append(text)

    def template(self, where: str, tpl: Any, doc: Schema, context: Schema) -> Schema:
        """The schema of a Parameters/ResultSelector/ItemSelector object, reading its
        `.$` paths (or the paths inside an intrinsic function) from `doc`."""
        if not isinstance(tpl, dict):
            return {"type": {str: "string", bool: "boolean", int: "integer", float: "number",
                             list: "array", type(None): "null"}[type(tpl)], "const": tpl}
        props = {}
        for key, value in tpl.items():
            if key.endswith(".$"):
                paths = (re.findall(r"\$\$?(?:\.[\w-]+|\[[^\]]*\])*", value)
                         if value.startswith("States.") else [value])
                leaves = [self.read(f"{where}.{key}", p, doc, context) for p in paths]
                one = len(paths) == 1 and len(leaves[0]) == 1
                props[key[:-2]] = leaves[0][0] if one else ANY
                if one and value.startswith("States.StringToJson("):
                    props[key[:-2]] = leaves[0][0].get("x-json", ANY)
            else:
                props[key] = self.template(f"{where}.{key}", value, doc, context)
        return _obj(where, **props)

    # -- states

    def flow(self, machine: Mapping[str, Any], start: Schema, context: Schema
             ) -> dict[str, Schema]:
        """Settle every state's input schema, then check each state's reads once.
        Returns the output schema of each state that ends the machine successfully."""
        states = machine["States"]
        inputs = {machine["StartAt"]: start}
        todo, visits = [machine["StartAt"]], 0
        report, self.report = self.report, False
        while todo:
            visits += 1
            assert visits < 50 * len(states), "the data flow does not settle"
            name = todo.pop(0)
            for nxt, out in self.state(name, states[name], inputs[name], context)[0]:
                new = out if nxt not in inputs else join(inputs[nxt], out)
                if new != inputs.get(nxt):
                    inputs[nxt] = new
                    todo.append(nxt)
        self.report = report
        ends = {}
        for name in states:
            assert name in inputs, f"{name} is never reached"
            _, end = self.state(name, states[name], inputs[name], context)
            if end is not None:
                ends[name] = end
        return ends

    def state(self, name: str, st: Mapping[str, Any], doc: Schema, context: Schema
              ) -> tuple[list[tuple[str, Schema]], Schema | None]:
        """([(next state, its input)], this state's output if it ends the machine)."""
        kind = st["Type"]
        data = doc if "InputPath" not in st else self.read(
            f"{name} InputPath", st["InputPath"], doc, context)[0]
        if kind == "Choice":
            return self.choice(name, st, data, context), None
        if kind == "Fail":
            for field in ("ErrorPath", "CausePath"):
                if field in st:
                    # a reference path, or States.Format('...', <path>) around one
                    path = re.sub(r"^States\.Format\('[^']*', (\$[^)]*)\)$", r"\1", st[field])
                    self.typed(f"{name} {field}", self.read(f"{name} {field}", path, data,
                                                            context), "String")
            return [], None
        if kind == "Succeed":
            out = data
        else:                                        # Task, Map
            result = self.result(name, st, data, context)
            if "ResultSelector" in st:
                result = self.template(f"{name} ResultSelector", st["ResultSelector"],
                                       result, context)
            out = set_path(doc, st.get("ResultPath", "$"), produced(result, name))
        if "OutputPath" in st:
            out = self.read(f"{name} OutputPath", st["OutputPath"], out, context)[0]
        edges = [(c["Next"], set_path(doc, c.get("ResultPath", "$"),
                                      produced(ERROR_OUTPUT, name))) for c in st.get("Catch", [])]
        if "Next" in st:
            edges.append((st["Next"], out))
        ends = kind == "Succeed" or bool(st.get("End"))
        return edges, (out if ends else None)

    def result(self, name: str, st: Mapping[str, Any], data: Schema, context: Schema
               ) -> Schema:
        kind = st["Type"]
        if kind == "Task":
            params = self.template(f"{name} Parameters", st.get("Parameters", {}), data, context)
            if st["Resource"] in SERVICE_TASKS:
                return SERVICE_TASKS[st["Resource"]]
            if st["Resource"] == "arn:aws:states:::aws-sdk:s3:getObject":
                return self.s3_json_object(name, st)
            assert st["Resource"] == "arn:aws:states:::lambda:invoke", (
                f"{name}: add the output schema of {st['Resource']} to this test")
            return lambda_invoke_output(self.lambda_result(name, st, params))
        if kind == "Map":
            if "ItemReader" in st:
                reader = st["ItemReader"]
                self.template(f"{name} ItemReader", reader.get("Parameters", {}), data, context)
                item = ITEM_READERS[reader["Resource"]]
            else:
                item = {"anyOf": self.read(f"{name} ItemsPath", st.get("ItemsPath", "$") + "[*]",
                                           data, context)}
            if "MaxConcurrencyPath" in st:
                self.typed(f"{name} MaxConcurrencyPath", self.read(
                    f"{name} MaxConcurrencyPath", st["MaxConcurrencyPath"], data, context),
                    "Numeric")
            inner_context = set_path(context, "$.Map", _obj(
                "$$.Map", Item=_obj("$$.Map.Item", Value=item, Index=INT)))
            if "ItemSelector" in st:
                item = self.template(f"{name} ItemSelector", st["ItemSelector"], data,
                                     inner_context)
            ends = self.flow(st["ItemProcessor"], item, inner_context)
            return {"type": "array", "items": {"anyOf": list(ends.values())}}
        raise AssertionError(f"{name}: teach this test what a {kind} state outputs")

    def s3_json_object(self, name: str, st: Mapping[str, Any]) -> Schema:
        key = st["Parameters"].get("Key.$") or st["Parameters"].get("Key", "")
        prefix = re.sub(r"^States\.Format\('", "", key)
        model = next((m for p, m in S3_JSON_OBJECTS.items() if prefix.startswith(p)), None)
        assert model, f"{name}: which step result is at {key!r}? (S3_JSON_OBJECTS)"
        return _obj("an S3 GetObject response", ETag=STR, ContentType=STR, Body={
            "type": "string", "x-json": json_schema(self.models[model], model)})

    def lambda_result(self, name: str, st: Mapping[str, Any], params: Schema) -> Schema:
        function, action = function_of(st)
        event_name = f"{function}Event"
        event = self.models.get(event_name)
        if event is None:
            self.problem(f"{name}: no event model {event_name}")
        else:
            fields = json_schema(event, event_name)["properties"]
            payload = params["properties"].get("Payload", ANY).get("properties", {})
            for key, value in payload.items():
                if key in fields:
                    if "const" in value:
                        self.fits(f"{name} Payload.{key}", [fields[key]], value["const"])
                elif (function, key) not in PAYLOAD_KEYS_OUTSIDE_THE_SCHEMA:
                    self.problem(f"{name}: Payload key {key!r} is no field of {event_name} "
                                 f"(its fields: {', '.join(fields) or 'none'})")
        model = result_model_name(self.models, function, action)
        return json_schema(self.models[model], model)

    def choice(self, name: str, st: Mapping[str, Any], doc: Schema, context: Schema
               ) -> list[tuple[str, Schema]]:
        edges = []
        for i, rule in enumerate(st["Choices"]):
            self.rule(f"{name} Choices[{i}]", rule, doc, context)
            into = doc
            for tested in [rule, *rule.get("And", [])]:       # every conjunct holds
                into = narrowed(into, tested)
            edges.append((rule["Next"], into))
        if "Default" in st:
            edges.append((st["Default"], doc))
        return edges

    def rule(self, name: str, rule: Mapping[str, Any], doc: Schema, context: Schema) -> None:
        guarded = doc
        for nested in rule.get("And", []):        # conjuncts see what earlier ones tested
            self.rule(name, nested, guarded, context)
            guarded = narrowed(guarded, nested)
        for nested in [*rule.get("Or", []), *([rule["Not"]] if "Not" in rule else [])]:
            self.rule(name, nested, doc, context)
        if "Variable" not in rule:
            return
        where = f"{name} Variable"
        maybe = "IsPresent" in rule
        leaves = self.read(where, rule["Variable"], doc, context,
                           "maybe" if maybe else "certain")
        for op, value in rule.items():
            kind = next((k for k in CHOICE_TYPES if op.startswith(k)), None)
            if kind is None:
                continue
            if op.endswith("Path"):
                self.typed(f"{name} {op}", self.read(f"{name} {op}", value, doc, context), kind)
            else:
                self.typed(f"{where} {rule['Variable']} ({op})", leaves, kind)
                if op.endswith("Equals"):
                    self.fits(f"{where} {rule['Variable']} ({op})", leaves, value)

    # -- types and constants

    def typed(self, where: str, leaves: list[Schema], kind: str) -> None:
        wanted = CHOICE_TYPES[kind]
        for leaf in leaves:
            for shape in branches(leaf):
                types = {shape["type"]} if isinstance(shape.get("type"), str) else set(
                    shape.get("type") or [])
                if types and not types & wanted:
                    self.problem(f"{where}: is {'/'.join(sorted(types))}, not {kind}")

    def fits(self, where: str, leaves: list[Schema], value: Any) -> None:
        allowed: list[Any] = []
        for leaf in leaves:
            for shape in branches(leaf):
                if "const" not in shape and "enum" not in shape:
                    return                                     # any value of the type
                allowed += [shape["const"]] if "const" in shape else shape["enum"]
        if value not in allowed:
            self.problem(f"{where}: {value!r} is not one of {allowed}")


def narrowed(doc: Schema, rule: Mapping[str, Any]) -> Schema:
    """`doc` where a rule `{"Variable": "$.x", "IsPresent": true}` holds: x is set."""
    if rule.get("IsPresent") is True and "Variable" in rule:
        _, segments = parse_path(rule["Variable"])
        if len(segments) == 1 and segments[0] in doc.get("properties", {}):
            return {**doc, "required": sorted({*doc.get("required", []), str(segments[0])})}
    return doc


def check_machine(asl: Mapping[str, Any], models: Mapping[str, Any],
                  output_reads: Mapping[str, str] | None = None,
                  start: Schema = EXECUTION_INPUT) -> tuple[list[Problem], int]:
    """(problems, number of paths read) of a state machine against `models` (a name ->
    pydantic model or union alias mapping like vars(ctr.steps)). `output_reads`: paths
    a reader of the finished execution's output uses (with .get: one shape suffices)."""
    walk = Walk(models)
    ends = walk.flow(asl, start, CONTEXT)
    succeeded = [out for name, out in ends.items() if asl["States"][name]["Type"] == "Succeed"]
    for path, reader in (output_reads or {}).items():
        try:
            resolve({"anyOf": succeeded}, parse_path(path)[1], every=False)
        except Unresolved as err:
            walk.problems.append(f"the output {reader} reads: {path}: {err}")
    return walk.problems, walk.reads


def step_models() -> dict[str, Any]:
    return {name: value for name, value in vars(steps).items()
            if (isinstance(value, type) and issubclass(value, pydantic.BaseModel))
            or type(value).__name__ == "TypeAliasType"}


# =========================================================================== the real contracts

# What readers of a finished execution's output use (with .get, or on the run where
# the key is set): a renamed result field would turn their figures into blanks.
OUTPUT_READS = {
    "$.lease.value.acquired": "ctr runs and the integration tests",
    "$.lease.value.reason": "ctr runs and the integration tests",
    "$.chunk.value.status": "ctr runs and the integration tests",
    "$.chunk.value.lines": "ctr runs, the pipeline bench and test_pipeline",
    "$.chunk.value.chunk_index": "ctr runs and test_reliability",
    "$.chunk.value.reused_existing_chunk": "test_reliability",
    "$.backfilled.value.status": "test_backfill",
    "$.backfilled.value.first_chunk": "test_backfill",
    "$.backfilled.value.end_chunk": "test_backfill",
    "$.backfilled.value.lines": "test_backfill",
    "$.plan.value.pending_count": "test_backfill",
    "$.aggregate.value.rows_out": "ctr runs",
    "$.aggregate.value.rows_rejected": "ctr runs",
    "$.aggregate.value.converted": "test_reliability",
    "$.fanout[*].rows_out": "ctr runs",
    "$.fanout[*].rows_rejected": "ctr runs",
    "$.train.value.status": "ctr runs and test_reliability",
    "$.train.value.version": "ctr runs and test_pipeline",
    "$.train.value.promoted": "ctr runs, the pipeline bench and test_pipeline",
    "$.train.value.reason": "ctr runs",
    "$.train.value.metrics.holdout_auc": "ctr runs",
    "$.train.value.metrics.peak_rss_mb": "the pipeline bench",
    "$.reload.value.status": "ctr runs",
    "$.reload.value.version": "ctr runs and test_pipeline",
    "$.sync.value.status": "test_serving_follows_registry",
    "$.sync.value.version": "test_serving_follows_registry",
}


# What readers of a finished scoring execution's output use.
SCORE_OUTPUT_READS = {
    "$.manifest.value.manifest_key": "ctr score and test_batch_scoring",
    "$.manifest.value.rows": "ctr score and test_batch_scoring",
    "$.manifest.value.rejects": "ctr score and test_batch_scoring",
    "$.manifest.value.lines": "ctr score and test_batch_scoring",
    "$.manifest.value.model_version": "ctr score",
    "$.manifest.value.adopted_ranges": "test_batch_scoring",
    "$.plan.value.range_count": "ctr score",
}
# Every state machine in statemachine/: (its execution input, the output reads, the
# result model each Lambda task gets, and the least number of reads the walk must see).
MACHINES: dict[str, tuple[Schema, dict[str, str], dict[str, str], int]] = {
    "pipeline.asl.json": (EXECUTION_INPUT, OUTPUT_READS, {
        "Acquire lease": "AcquireResult", "Sync serving model": "SyncResult",
        "Plan backfill": "BackfillPlan", "Cut one range": "RangeCut",
        "Finish backfill": "BackfillFinished",
        "Chunk new lines": "ChunkResult", "Plan aggregation": "PlanResult",
        "Aggregate to Parquet": "AggregateResult", "Aggregate one chunk": "AggregateResult",
        "Train model": "TrainResult", "Reload serving model": "ReloadResult",
        "Release lease": "LeaseReleased", "Evaluate served model": "MonitorResult",
        "Publish rolled-back model": "ReloadResult"}, 25),
    # TrainBackend=sagemaker (generated): "Train model" is a training job, and "Read
    # training result" puts its TrainResult where the Lambda's goes.
    "pipeline.sagemaker.asl.json": (EXECUTION_INPUT, OUTPUT_READS, {
        "Acquire lease": "AcquireResult", "Sync serving model": "SyncResult",
        "Plan backfill": "BackfillPlan", "Cut one range": "RangeCut",
        "Finish backfill": "BackfillFinished",
        "Chunk new lines": "ChunkResult", "Plan aggregation": "PlanResult",
        "Aggregate to Parquet": "AggregateResult", "Aggregate one chunk": "AggregateResult",
        "Reload serving model": "ReloadResult",
        "Release lease": "LeaseReleased", "Evaluate served model": "MonitorResult",
        "Publish rolled-back model": "ReloadResult"}, 25),
    "score.asl.json": (SCORE_INPUT, SCORE_OUTPUT_READS, {
        "Plan ranges": "ScorePlan", "Score one range": "ScoredRange",
        "Write manifest": "ScoreManifest"}, 20),
}


def test_every_state_machine_is_checked():
    assert set(MACHINES) == set(ASLS)


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_every_path_the_state_machine_reads_exists_in_the_model_that_produces_it(machine):
    start, output_reads, _, least_reads = MACHINES[machine]
    problems, reads = check_machine(ASLS[machine], step_models(), output_reads, start)
    assert problems == [], "\n".join(problems)
    assert reads >= least_reads       # the walk saw the machine's reads, not an empty one


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_each_lambda_task_gets_its_result_model_from_its_function_and_action(machine):
    asl = ASLS[machine]
    tasks = {name: st for name, st in all_states(asl["States"]).items()
             if st["Type"] == "Task" and st["Resource"] == "arn:aws:states:::lambda:invoke"}
    models = step_models()
    found = {name: result_model_name(models, *function_of(st)) for name, st in tasks.items()}
    assert found == MACHINES[machine][2]


def test_a_map_concurrency_path_must_be_a_number():
    asl = copy.deepcopy(ASLS["score.asl.json"])
    asl["States"]["Score ranges in parallel"]["MaxConcurrencyPath"] = "$.plan.value.run_id"
    problems, _ = check_machine(asl, step_models(), {}, SCORE_INPUT)
    assert problems == ["Score ranges in parallel MaxConcurrencyPath: is string, not Numeric"]


def test_payload_keys_outside_the_event_schemas_are_what_we_say():
    for (function, key), why in PAYLOAD_KEYS_OUTSIDE_THE_SCHEMA.items():
        event = step_models()[f"{function}Event"]
        assert key not in json_schema(event, "")["properties"], f"{function}: {key} is a field"
        if why.startswith("ignored"):
            assert event.model_validate({key: "x"}) == event.model_validate({})
    assert steps.AggregateEvent.model_validate(
        {"action": "aggregate", "key": layout.chunk_key(3)}).indices == [3]


def all_states(states: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(states)
    for st in states.values():
        if st["Type"] == "Map":
            out.update(all_states(st["ItemProcessor"]["States"]))
    return out


# =========================================================================== the walker's own tests

class TinyLease(pydantic.BaseModel):
    acquired: bool
    reason: str | None = None


class TinyBusy(pydantic.BaseModel):
    acquired: bool
    holder: str


class TinyCounts(pydantic.BaseModel):
    rows: int


class TinyChunk(pydantic.BaseModel):
    status: Literal["chunked", "exhausted"]
    counts: TinyCounts | None = None                      # a $ref, behind an anyOf
    keys: list[str] = []


class TinyGuardEvent(pydantic.BaseModel):
    action: Literal["acquire", "release"]
    holder: str


class TinyChunkEvent(pydantic.BaseModel):
    pass


TINY_MODELS: dict[str, Any] = {"GuardEvent": TinyGuardEvent, "GuardResult": TinyLease,
                               "ChunkEvent": TinyChunkEvent, "ChunkResult": TinyChunk}


def lambda_task(function: str, payload: dict[str, Any], result_path: str, nxt: str
                ) -> dict[str, Any]:
    return {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": f"${{{function}FunctionArn}}", "Payload": payload},
            "ResultSelector": {"value.$": "$.Payload"}, "ResultPath": result_path,
            "Next": nxt}


def tiny_asl(**change: Any) -> dict[str, Any]:
    """Lease -> acquired? -> chunk -> exhausted? -> done, each read a real pattern."""
    states: dict[str, Any] = {
        "Lease": lambda_task("Guard", {"action": "acquire", "holder.$": "$$.Execution.Name"},
                             "$.lease", "Acquired?"),
        "Acquired?": {"Type": "Choice", "Default": "Busy", "Choices": [
            {"Variable": "$.lease.value.acquired", "BooleanEquals": True, "Next": "Chunk"}]},
        "Busy": {"Type": "Succeed"},
        "Chunk": lambda_task("Chunk", {}, "$.chunk", "Exhausted?"),
        "Exhausted?": {"Type": "Choice", "Default": "Rows?", "Choices": [
            {"Variable": "$.chunk.value.status", "StringEquals": "exhausted", "Next": "Done"}]},
        "Rows?": {"Type": "Choice", "Default": "Done", "Choices": [
            {"Variable": "$.chunk.value.counts.rows", "NumericGreaterThan": 0, "Next": "Done"}]},
        "Done": {"Type": "Succeed"},
    }
    for name, state in change.items():
        states[name.replace("_", " ")] = state
    return {"StartAt": "Lease", "States": states}


def tiny_problems(asl: dict[str, Any], **models: Any) -> list[str]:
    return check_machine(asl, {**TINY_MODELS, **models})[0]


def test_the_walker_accepts_a_machine_that_reads_what_its_steps_return():
    problems, reads = check_machine(tiny_asl(), TINY_MODELS)
    assert problems == []
    # holder.$, 3 x value.$ ... the ResultSelectors, and the three Choice variables
    assert reads == 6


def test_a_renamed_result_field_fails():
    class Renamed(pydantic.BaseModel):
        is_acquired: bool
        reason: str | None = None

    assert tiny_problems(tiny_asl(), GuardResult=Renamed) == [
        "Acquired? Choices[0] Variable: $.lease.value.acquired: no 'acquired' in Renamed "
        "(its fields: is_acquired, reason); $.lease is set by 'Lease'"]


def test_every_shape_of_a_union_result_needs_the_field():
    both = TinyLease | TinyBusy
    assert tiny_problems(tiny_asl(), GuardResult=both) == []
    assert tiny_problems(tiny_asl(), GuardResult=TinyLease | TinyCounts) == [
        "Acquired? Choices[0] Variable: $.lease.value.acquired: no 'acquired' in TinyCounts "
        "(its fields: rows); $.lease is set by 'Lease'"]


def test_nested_and_optional_fields_are_followed_and_checked():
    class Counts(pydantic.BaseModel):
        row_count: int

    class Chunk(pydantic.BaseModel):
        status: Literal["chunked", "exhausted"]
        counts: Counts | None = None

    assert tiny_problems(tiny_asl(), ChunkResult=Chunk) == [
        "Rows? Choices[0] Variable: $.chunk.value.counts.rows: no 'rows' in Counts "
        "(its fields: row_count); $.chunk is set by 'Chunk'"]


def test_a_choice_must_compare_a_field_of_its_type_with_a_possible_value():
    class Chunk(pydantic.BaseModel):
        status: Literal["chunked", "done"]
        counts: TinyCounts | None = None

    class Lease(pydantic.BaseModel):
        acquired: str

    assert tiny_problems(tiny_asl(), ChunkResult=Chunk, GuardResult=Lease) == [
        "Acquired? Choices[0] Variable $.lease.value.acquired (BooleanEquals): "
        "is string, not Boolean",
        "Exhausted? Choices[0] Variable $.chunk.value.status (StringEquals): "
        "'exhausted' is not one of ['chunked', 'done']"]


def test_a_read_needs_its_producer_on_every_path_into_the_state_or_an_is_present_test():
    skips_chunk = {"Type": "Choice", "Default": "Exhausted?", "Choices": [
        {"Variable": "$.lease.value.acquired", "BooleanEquals": True, "Next": "Chunk"},
        {"Variable": "$.lease.value.acquired", "BooleanEquals": False, "Next": "Busy"}]}
    assert tiny_problems(tiny_asl(**{"Acquired?": skips_chunk})) == [
        "Exhausted? Choices[0] Variable: $.chunk.value.status: "
        "$.chunk is not set on every path into the state",
        "Rows? Choices[0] Variable: $.chunk.value.counts.rows: "
        "$.chunk is not set on every path into the state"]
    asl = tiny_asl(**{"Acquired?": {**skips_chunk, "Default": "Chunked?"}, "Chunked?": {
        "Type": "Choice", "Default": "Done", "Choices": [
            {"Variable": "$.chunk", "IsPresent": True, "Next": "Exhausted?"}]}})
    asl["States"]["Chunk"]["Next"] = "Chunked?"
    assert tiny_problems(asl) == []


def test_the_context_object_the_input_and_the_event_models_are_checked():
    asl = tiny_asl()
    asl["States"]["Lease"]["Parameters"]["Payload"]["holder.$"] = "$$.Execution.Nme"
    asl["States"]["Chunk"]["Parameters"]["Payload"] = {"holder.$": "$.from_the_input"}
    asl["States"]["Done"] = {"Type": "Fail", "ErrorPath": "$.error.Error"}
    assert tiny_problems(asl) == [
        "Lease Parameters.Payload.holder.$: $$.Execution.Nme: no 'Nme' in $$.Execution "
        "(its fields: Id, Name, StartTime, RoleArn, Input)",
        "Chunk Parameters.Payload.holder.$: $.from_the_input: nothing sets "
        "$.from_the_input before this state",
        "Chunk: Payload key 'holder' is no field of ChunkEvent (its fields: none)",
        "Done ErrorPath: $.error.Error: nothing sets $.error before this state"]
    asl["States"]["Lease"]["Parameters"]["Payload"] = {"action": "acquired", "holder": "me"}
    assert tiny_problems(tiny_asl(Lease=asl["States"]["Lease"])) == [
        "Lease Payload.action: 'acquired' is not one of ['acquire', 'release']"]


def test_catch_output_and_map_items_flow_into_the_states_they_reach():
    asl = tiny_asl()
    asl["States"]["Chunk"]["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error",
                                        "Next": "Failed"}]
    asl["States"]["Failed"] = {"Type": "Fail", "ErrorPath": "$.error.Error",
                               "CausePath": "$.error.Reason"}
    asl["States"]["Exhausted?"]["Default"] = "Each chunk"
    asl["States"]["Each chunk"] = {
        "Type": "Map", "ResultPath": "$.each", "Next": "Rows?",
        "ItemReader": {"Resource": "arn:aws:states:::s3:listObjectsV2",
                       "Parameters": {"Bucket": "b", "Prefix": "chunks/"}},
        "ItemProcessor": {"StartAt": "One", "States": {"One": {
            **lambda_task("Chunk", {}, "$.one", "x"), "Next": None, "End": True,
            "Parameters": {"FunctionName": "${ChunkFunctionArn}",
                           "Payload": {"holder.$": "$.Kee"}}}}}}
    del asl["States"]["Each chunk"]["ItemProcessor"]["States"]["One"]["Next"]
    problems, _ = check_machine(asl, TINY_MODELS, {"$.each[*].one.value.status": "a reader",
                                                   "$.each[*].one.value.stat": "a typo"})
    assert problems == [
        "Failed CausePath: $.error.Reason: no 'Reason' in a Catch's error output (its "
        "fields: Error, Cause); $.error is set by 'Chunk'",
        "One Parameters.Payload.holder.$: $.Kee: nothing sets $.Kee before this state",
        "One: Payload key 'holder' is no field of ChunkEvent (its fields: none)",
        "the output a typo reads: $.each[*].one.value.stat: no 'stat' in TinyChunk (its "
        "fields: status, counts, keys)"]


def test_a_map_over_a_path_needs_an_array_there():
    def over(items_path: str) -> list[str]:
        asl = tiny_asl()
        asl["States"]["Exhausted?"]["Default"] = "Each key"
        asl["States"]["Each key"] = {
            "Type": "Map", "ItemsPath": items_path, "ResultPath": None, "Next": "Rows?",
            "ItemProcessor": {"StartAt": "One", "States": {"One": {
                "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": True,
                "Parameters": {"FunctionName": "${ChunkFunctionArn}", "Payload": {}}}}}}
        return tiny_problems(asl)

    assert over("$.chunk.value.keys") == []
    assert over("$.chunk.value.status") == [
        "Each key ItemsPath: $.chunk.value.status[*]: no '*' in Status (its fields: none); "
        "$.chunk is set by 'Chunk'"]


def test_the_training_jobs_result_must_come_back_where_the_lambdas_goes():
    """TrainBackend=sagemaker: the states after training read $.train.value as a
    TrainResult, which only the GetObject of the job's result object provides."""
    asl = copy.deepcopy(ASLS["pipeline.sagemaker.asl.json"])
    read = asl["States"]["Read training result"]
    problems, _ = check_machine(asl, step_models(), OUTPUT_READS, EXECUTION_INPUT)
    assert problems == []
    read["ResultSelector"] = {"value.$": "$.Body"}          # the text, not the JSON in it
    problems, _ = check_machine(asl, step_models(), OUTPUT_READS, EXECUTION_INPUT)
    assert any("Promoted?" in p and "$.train.value.promoted" in p for p in problems), problems
    read["ResultSelector"] = {"value.$": "States.StringToJson($.Body)"}
    read["ResultPath"] = "$.train_result"                  # not where the Lambda's goes
    problems, _ = check_machine(asl, step_models(), OUTPUT_READS, EXECUTION_INPUT)
    assert any("$.train.value" in p for p in problems), problems
