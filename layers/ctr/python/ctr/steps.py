"""What each Lambda step takes and returns: the contracts between the states of
`statemachine/pipeline.asl.json`.

Every handler parses its event with the step's `*Event` model (`parse_event`) and
returns the step's `*Result` model dumped as JSON (`StepModel.to_payload`). The domain
functions of `ctr` take and return these same objects, so what one state hands the
next is written here once, and `tests/unit/test_step_contracts.py` checks every
JSONPath the state machine reads against the JSON schema of the model that produces it.

Events ignore keys they do not know (Step Functions hands a state more than it needs,
e.g. the execution input), but a known key of the wrong type is a `ValidationError`
naming the field, never a KeyError deep in a step. Results forbid unknown keys, so a
field cannot be added to a result without being declared here.
"""

from __future__ import annotations

from typing import Any, Self

import pydantic

from ctr.errors import ValidationError


class StepModel(pydantic.BaseModel):
    """Base of every step result: unknown fields are a bug, not data."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    def to_payload(self) -> dict[str, Any]:
        """The JSON object a Lambda handler returns."""
        return self.model_dump(mode="json")


class StepEvent(pydantic.BaseModel):
    """Base of every step event: extra keys are ignored, known keys are validated."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)


def parse_event[E: StepEvent](model: type[E], event: Any) -> E:
    """`event` as `model`; None (a manual invoke without payload) is the empty event.

    A malformed event raises `ctr.errors.ValidationError` with field-level errors, which
    the state machine treats as a failure of the step (never retried).
    """
    try:
        return model.model_validate({} if event is None else event)
    except pydantic.ValidationError as err:
        raise ValidationError(
            f"invalid {model.__name__}: {err.error_count()} error(s)",
            errors=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in err.errors()],
        ) from err


# --------------------------------------------------------------------------- guard

# --------------------------------------------------------------------------- chunk

# --------------------------------------------------------------------------- plan + aggregate

# --------------------------------------------------------------------------- train

# --------------------------------------------------------------------------- reload
