"""What routes receive through `Depends`: the settings, the model cache, the sample
pool, the page directory, the prediction log (None when off), the alarm reader of
/monitoring and the request id of the request being served.

`create_app` puts one of each on `app.state`; routes never build or find them
themselves, so a route module holds no state and a test can swap any of them with
`app.dependency_overrides[get_model_cache] = ...`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

from ctr.serving.model_cache import ModelCache
from ctr.serving.prediction_log import PredictionLog
from ctr.serving.request_id import get_request_id
from ctr.serving.samples import SampleSource
from ctr.serving.settings import ServingSettings


def _from_state(attribute: str) -> Callable[[Request], Awaitable[Any]]:
    # Async so that FastAPI calls it on the event loop instead of a worker thread.
    async def provide(request: Request) -> Any:
        return getattr(request.app.state, attribute)

    provide.__name__ = f"get_{attribute}"
    return provide


get_settings = _from_state("settings")
get_model_cache = _from_state("model_cache")
get_samples = _from_state("samples")
get_web_dir = _from_state("web_dir")
get_prediction_log = _from_state("prediction_log")
get_alarm_reader = _from_state("alarm_reader")

Settings = Annotated[ServingSettings, Depends(get_settings)]
Cache = Annotated[ModelCache, Depends(get_model_cache)]
Samples = Annotated[SampleSource, Depends(get_samples)]
WebDir = Annotated[Path, Depends(get_web_dir)]
PredLog = Annotated[PredictionLog | None, Depends(get_prediction_log)]
RequestIdentifier = Annotated[str, Depends(get_request_id)]
