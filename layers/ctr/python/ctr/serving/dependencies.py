"""What routes receive through `Depends`: the settings, the model cache and the sample
pool of the app that serves the request.

`create_app` puts one of each on `app.state`; routes never build or find them
themselves, so a route module holds no state and a test can swap any of them with
`app.dependency_overrides`. The providers are `async` so that FastAPI calls them on
the event loop instead of handing each one to a worker thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from ctr.serving.model_cache import ModelCache
from ctr.serving.samples import SampleSource
from ctr.serving.settings import ServingSettings


async def get_settings(request: Request) -> ServingSettings:
    settings: ServingSettings = request.app.state.settings
    return settings


async def get_model_cache(request: Request) -> ModelCache:
    cache: ModelCache = request.app.state.model_cache
    return cache


async def get_samples(request: Request) -> SampleSource:
    samples: SampleSource = request.app.state.samples
    return samples


async def get_web_dir(request: Request) -> Path:
    web_dir: Path = request.app.state.web_dir
    return web_dir


Settings = Annotated[ServingSettings, Depends(get_settings)]
Cache = Annotated[ModelCache, Depends(get_model_cache)]
Samples = Annotated[SampleSource, Depends(get_samples)]
WebDir = Annotated[Path, Depends(get_web_dir)]
