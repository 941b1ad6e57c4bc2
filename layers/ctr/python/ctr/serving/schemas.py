"""Request and response models of the predict API, and request -> table conversion.

The pydantic models check the *shape* of a request (which input form, lists of the
right kind); the *values* are validated by `ctr.criteo`, the same rules that decide
which lines of a data file are rejected, so the API and the pipeline cannot disagree
about what a valid Criteo record is.

Accepted values (decided once, in `ctr.criteo`, documented here for API users):

* I1..I13: a JSON integer or an integral JSON number (`3.0`) within +-(2**53 - 1) (the
  exact range of JSON numbers in most clients), or a string holding a decimal integer
  (`"3"`, `"-1"`; surrounding spaces are ignored) within int64.
  Booleans and fractional numbers are rejected. `null`, `""` or an absent key = missing.
* C1..C26: exactly 8 lowercase hex characters (`"68fd1e64"`). `null`, `""` or an absent
  key = missing. Uppercase hex is rejected rather than silently treated as unseen.
* `features`: 39 values per row, in the order I1..I13, C1..C26, same rules per value.
* `lines`: one Criteo TSV line per string, 39 fields (features) or 40 (label first; the
  label is ignored), empty field = missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    model_validator,
)

from ctr import criteo
from ctr.errors import ValidationError
from ctr.registry.audit import AuditEvent
from ctr.schema import CAT_COLUMNS, FEATURE_COLUMNS, INT_COLUMNS

# The OpenAPI schema says what `ctr.criteo` accepts (tested by fuzzing it with
# schemathesis: schema-valid requests get 2xx, schema-invalid ones 4xx). Its patterns
# are a little stricter where a regex cannot say "fits in int64": at most 18 digits.
_INT_VALUE = {"anyOf": [
    {"type": "integer", "minimum": -criteo.JSON_SAFE_INT, "maximum": criteo.JSON_SAFE_INT},
    {"type": "string", "pattern": r"^(\s*-?0*[0-9]{1,18}\s*)?$"},
    {"type": "null"}]}
_CAT_VALUE = {"anyOf": [{"type": "string", "pattern": "^([0-9a-f]{8})?$"}, {"type": "null"}]}
_LINE_INT, _LINE_CAT = "(-?0*[0-9]{1,18})?", "([0-9a-f]{8})?"
_LINE_PATTERN = (rf"^((-?0*0|0*1)\t)?({_LINE_INT}\t){{{len(INT_COLUMNS)}}}"
                 rf"{_LINE_CAT}(\t{_LINE_CAT}){{{len(CAT_COLUMNS) - 1}}}$")
_ROW_JSON_SCHEMA = {
    "type": "object",
    "description": "One record by field name; absent keys are missing values.",
    "properties": {
        **{c: _INT_VALUE for c in INT_COLUMNS},
        **{c: _CAT_VALUE for c in CAT_COLUMNS},
        "label": {"description": "ignored (rows from a data file may carry it)"},
    },
    "additionalProperties": False,
}
Row = Annotated[dict[str, Any], WithJsonSchema(_ROW_JSON_SCHEMA)]
FeatureVector = Annotated[list[Any], WithJsonSchema({
    "type": "array", "minItems": len(FEATURE_COLUMNS), "maxItems": len(FEATURE_COLUMNS),
    "description": "39 values in the order I1..I13, C1..C26 (null or \"\" = missing)",
    "prefixItems": [_INT_VALUE] * len(INT_COLUMNS) + [_CAT_VALUE] * len(CAT_COLUMNS),
})]
Line = Annotated[str, WithJsonSchema({
    "type": "string", "pattern": _LINE_PATTERN,
    "description": "a Criteo TSV line: 39 fields, or 40 with a 0/1 label first"})]

EXAMPLE_ROW: dict[str, Any] = {"I1": 1, "I2": 5, "I3": None, "I5": 1382, "C1": "68fd1e64",
                               "C2": "80e26c9b", "C3": "fb936136", "C6": ""}
EXAMPLE_FEATURES: list[Any] = [EXAMPLE_ROW.get(c) or None for c in FEATURE_COLUMNS]
EXAMPLE_LINE = "\t".join("" if v is None else str(v) for v in EXAMPLE_FEATURES)
EXAMPLES: list[Any] = [{"rows": [EXAMPLE_ROW]}, {"lines": [EXAMPLE_LINE]},
                       {"features": [EXAMPLE_FEATURES]}]
INPUT_FORMS = ("rows", "lines", "features")


class ParsedRows:
    """`rows` already converted to the table `request_to_table` would build and already
    proven valid (`ctr.serving.fast_json.rows_body_table` reads large bodies straight
    into columns). PredictRequest takes it as it is."""

    __slots__ = ("table",)

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return int(self.table.num_rows)


class PredictRequest(BaseModel):
    """Exactly one of `rows`, `lines`, `features`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": EXAMPLES,
        "oneOf": [{"required": [form], "properties": {form: {"type": "array"}}}
                  for form in INPUT_FORMS]})

    rows: list[Row] | None = Field(None, min_length=1,
                                   description="JSON records keyed I1..I13, C1..C26")
    lines: list[Line] | None = Field(None, min_length=1,
                                    description="Criteo TSV lines with or without the label")
    features: list[FeatureVector] | None = Field(
        None, min_length=1, description="the seed's form: 39 values per row, I1..I13, C1..C26")

    @model_validator(mode="wrap")
    @classmethod
    def _usual_shape_as_is(cls, data: Any, handler: ValidatorFunctionWrapHandler
                           ) -> PredictRequest:
        """The usual request -- one form, a non-empty list of items of that form's
        JSON type -- is taken as parsed: what validating it item by item would check
        is exactly these types (the values are `ctr.criteo`'s job), and for 1,000 rows
        of 39 values that item-by-item copy cost more than the prediction. Anything
        else is validated in full, so every shape error is pydantic's, as before."""
        if type(data) is dict and len(data) == 1:
            ((form, items),) = data.items()
            if form == "rows" and type(items) is ParsedRows:
                return cls.model_construct(None, rows=items)
            kind = _ITEM_TYPE.get(form)
            if (kind is not None and type(items) is list and items
                    and all(type(item) is kind for item in items)):
                return cls.model_construct(None, **{str(form): items})
        result: PredictRequest = handler(data)
        return result

    @model_validator(mode="after")
    def _exactly_one_form(self) -> PredictRequest:
        given = [name for name in INPUT_FORMS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'rows', 'lines' or 'features'"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    @property
    def form(self) -> str:
        return next(name for name in INPUT_FORMS if getattr(self, name) is not None)

    @property
    def num_rows(self) -> int:
        return len(getattr(self, self.form))


# The JSON type of one item of each input form (what PredictRequest's fields accept).
_ITEM_TYPE: dict[str, type] = {"rows": dict, "lines": str, "features": list}


class PredictQuery(BaseModel):
    """The query of POST /predict: `explain` only, exactly `true` or `false` (anything
    else, or an unknown parameter, is a 422, as the OpenAPI schema says)."""

    model_config = ConfigDict(extra="forbid")

    explain: Literal["true", "false"] = Field(
        "false", description="true: add each row's per-field contributions (logit units)")


def request_to_table(request: PredictRequest, max_rows: int) -> pa.Table:
    """The request's records as a table of the 39 feature columns (PARQUET_SCHEMA types).

    Raises ValidationError with field-level `errors` ({"loc": ["body", form, i, ...],
    "msg"}) for too many rows or any invalid value; nothing is predicted then.
    """
    form = request.form
    if request.num_rows > max_rows:
        raise ValidationError(
            f"too many rows: {request.num_rows} (at most {max_rows} per request)",
            errors=[_error(["body", form],
                           f"at most {max_rows} rows per request, got {request.num_rows}")])
    if isinstance(request.rows, ParsedRows):
        return request.rows.table
    if form == "rows":
        try:
            return criteo.rows_to_table(request.rows or [])
        except ValidationError as err:
            raise _rehome(err, lambda loc, msg: (loc, msg)) from None
    if form == "lines":
        table, errors = criteo.lines_to_table(request.lines or [])
        if errors:
            raise _rehome(ValidationError(f"{len(errors)} invalid field(s) in lines",
                                          errors=errors), lambda loc, msg: (loc, msg))
        return table
    return _features_to_table(request.features or [])


def _features_to_table(features: list[list[Any]]) -> pa.Table:
    """The seed's positional form, validated by the same rules as `rows`: positions
    stay in `loc`, column names are added to the messages."""
    bad_length = [_error(["body", "features", i],
                         f"expected {len(FEATURE_COLUMNS)} values (I1..I13, C1..C26), "
                         f"got {len(vector)}")
                  for i, vector in enumerate(features) if len(vector) != len(FEATURE_COLUMNS)]
    if bad_length:
        raise ValidationError(f"{len(bad_length)} feature vector(s) of the wrong length",
                              errors=bad_length)
    fast = criteo.features_to_table(features)
    if fast is not None:
        return fast
    try:
        return criteo.rows_to_table([dict(zip(FEATURE_COLUMNS, v, strict=True))
                                     for v in features])
    except ValidationError as err:
        def positional(loc: list[Any], msg: str) -> tuple[list[Any], str]:
            _, i, name = loc                     # ["rows", i, "C3"]
            return ["features", i, FEATURE_COLUMNS.index(name)], f"{name}: {msg}"
        raise _rehome(err, positional) from None


def _rehome(err: ValidationError,
            convert: Callable[[list[Any], str], tuple[list[Any], str]]) -> ValidationError:
    """A `ctr.criteo` error re-homed under the request body (FastAPI's loc convention);
    only `loc` and `msg` are kept, so no input is echoed back."""
    errors = []
    for e in err.details.get("errors", []):  # type: ignore[attr-defined]
        loc, msg = convert(list(e["loc"]), str(e["msg"]))
        errors.append(_error(["body", *loc], msg))
    return ValidationError(err.message, errors=errors)


def _error(loc: list[Any], msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg}


# --------------------------------------------------------------------------- responses

class ModelRef(BaseModel):
    """Which model answered: enough to find it in the registry and in the bucket."""

    name: str
    version: int
    alias: str
    run_id: str
    run_name: str | None
    artifact_uri: str
    trained_at: str | None


class Contribution(BaseModel):
    field: str = Field(description="a raw Criteo field, I1..I13 or C1..C26")
    value: float = Field(description="its signed contribution to the logit")


class RowExplanation(BaseModel):
    """Why one row got its probability, in logit units: base_value plus every
    contribution is the logit of the row's prediction."""

    base_value: float = Field(description="the model's expected logit (XGBoost's bias)")
    contributions: list[Contribution] = Field(
        description="all 39 raw fields, sorted by |value|, largest first")


class PredictResponse(BaseModel):
    predictions: list[float] = Field(description="click probability per input row, in order")
    num_samples: int
    model: ModelRef
    explanations: list[RowExplanation] | None = Field(
        None, exclude_if=lambda value: value is None,
        description="with ?explain=true only: per row, XGBoost's per-feature contributions "
                    "(pred_contribs) mapped back to the 39 raw fields")


def explanations(base: Any, contributions: Any) -> list[dict[str, Any]]:
    """The response's `explanations` from `Predictor.explain_table`'s arrays: per row,
    the 39 fields sorted by |contribution|, largest first."""
    import numpy as np

    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")
    values = np.take_along_axis(contributions, order, axis=1).tolist()
    names = np.asarray(FEATURE_COLUMNS, dtype=object)[order].tolist()
    return [{"base_value": b,
             "contributions": [{"field": f, "value": v} for f, v in zip(fs, vs, strict=True)]}
            for b, fs, vs in zip(base.tolist(), names, values, strict=True)]


class HealthResponse(BaseModel):
    status: str = Field(description='"ok" when a model is loaded, else "no_model"')
    model_loaded: bool
    version: int | None
    pointer_age_seconds: float | None = Field(
        description="seconds since this instance last read serving/production.json "
                    "(at most POINTER_TTL_SECONDS plus the time to the next request)")
    pointer_ttl_seconds: float
    published_at: str | None = Field(description="when reload published the loaded version")
    loaded_at: str | None = Field(description="when this instance loaded it")
    model_name: str
    last_error: str | None = Field(description="the last failed pointer check or load, if any")
    registry_production_version: int | None = Field(
        description="the version the registry's `production` alias names, as of "
                    "serving/registry.json (written by the train step and reload)")
    serving_behind: bool = Field(
        description="true when the registry's production version is not the one this "
                    "instance serves: a reload failed or has not been seen yet; the next "
                    "pipeline execution publishes it first")
    registry_snapshot_at: str | None = Field(
        description="when serving/registry.json was last rewritten")
    no_model_reason: str | None = Field(
        None, description="when no version is in production: why the newest one is not "
                          "(e.g. rejected because it does not beat the constant prior)")


class VersionInfo(BaseModel):
    version: int
    aliases: list[str]
    status: str = Field(description="production, previous, candidate, rejected, archived "
                                    "or none")
    status_reason: str | None
    run_id: str | None
    run_name: str | None
    metrics: dict[str, float]
    created_at: str | None
    data_window: str | None = None
    holdout: str | None = Field(
        None, description="the rows this version's metrics were measured on "
                          "(part[offset:end]@digest): versions measured on different rows "
                          "are not comparable")
    gate: dict[str, str] = Field(
        default_factory=dict, description="the promotion gate's comparison on shared rows "
                                          "(compared_with_version, logloss_diff_upper95, ...)")


class ModelInfoResponse(BaseModel):
    model_name: str
    production_version: int | None = Field(description="the version this API serves")
    registry_production_version: int | None = Field(
        description="the version the registry's `production` alias names (snapshot)")
    serving_behind: bool = Field(
        description="true when the registry's production version is not the one served")
    production: dict[str, Any] | None = Field(
        description="provenance of the served version (serving/v{N}/provenance.json)")
    versions: list[VersionInfo] = Field(description="every registered version, newest first")
    snapshot_generated_at: str | None


class SamplesResponse(BaseModel):
    rows: list[dict[str, Any]]
    lines: list[str] = Field(description="the same rows as Criteo TSV lines without the label")
    labels: list[int] = Field(description="whether each sample row was actually clicked")
    source: str = Field(description="the Parquet part the rows come from")


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str


class ErrorResponse(BaseModel):
    error: str = Field(description="error class, e.g. ValidationError or NoModelError")
    message: str
    errors: list[ErrorItem] = []


class ModelHistoryResponse(BaseModel):
    model_name: str
    events: list[AuditEvent] = Field(
        description="registry events, newest first (audit/<model>/ in the bucket)")
