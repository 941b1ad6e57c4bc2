"""The page in `web/`: GET / and /static/*, served only when the directory exists
(the API works without it; the page is a convenience). The page's scripts are ES
modules (`<script type="module">`), which browsers run only when served with a
JavaScript content type: `.js` is registered as text/javascript here rather than left
to the host's mime.types."""

from __future__ import annotations

import logging
import mimetypes
import os
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ctr.serving.dependencies import WebDir

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


@router.get("/")
def page(web_dir: WebDir) -> FileResponse:
    return FileResponse(web_dir / "index.html", media_type="text/html")


def find_web_dir(configured: Path | None = None) -> Path | None:
    """The static page: WEB_DIR if set, else a `web/` directory next to the function
    code (Lambda task root / working directory) or in the repository above this file."""
    if configured is not None:
        return configured if (configured / "index.html").is_file() else None
    roots = [Path(os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())), Path.cwd(),
             *Path(__file__).resolve().parents]
    for root in roots:
        if (root / "web" / "index.html").is_file():
            return root / "web"
    return None


def install(app: FastAPI, web_dir: Path | None) -> None:
    """Serve the page from `web_dir` on `app` (a router cannot carry a mount)."""
    if web_dir is None:
        log.warning("no web/ directory found: / and /static are not served")
        return
    mimetypes.add_type("text/javascript", ".js")
    mimetypes.add_type("application/json", ".json")
    app.state.web_dir = web_dir
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=web_dir), name="static")
