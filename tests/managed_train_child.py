"""A child process for tests/unit/test_managed_train.py: runs functions/train/app.py as
`__main__` with the arguments it is given (SageMaker's `train`), exactly as the training
job's container does, with two stand-ins for the cloud: the bucket is an in-memory S3
holding synthetic Parquet parts, and EventBridge records what it is sent. MLflow is the
SQLite store named by MLFLOW_TRACKING_URI. When the entry point exits, the bucket's keys
and objects under train-results/ go to the JSON file CHILD_REPORT names."""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import ctr.function
from ctr.registry import audit
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.synth_parts import put_parts

ROOT = Path(__file__).resolve().parents[1]


class RecordingEvents:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.entries += Entries
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "e"} for _ in Entries]}


def main() -> int:
    s3, events = MemoryS3(), RecordingEvents()
    put_parts(Store(s3, os.environ["BUCKET_NAME"]), 0, int(os.environ.get("CHILD_PARTS", "2")),
              1500, seed=2)
    ctr.function.make_s3_client = lambda *a, **k: s3           # type: ignore[assignment]
    audit.events_client = lambda *a, **k: events               # type: ignore[assignment]
    sys.argv = [str(ROOT / "functions" / "train" / "app.py"), *sys.argv[1:]]
    code: int | str | None = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as done:
        code = done.code
    report = {"keys": sorted(s3.objects),
              "results": {k: json.loads(body) for k, (body, _) in s3.objects.items()
                          if k.startswith("train-results/")},
              "event_types": [e["DetailType"] for e in events.entries]}
    Path(os.environ["CHILD_REPORT"]).write_text(json.dumps(report))
    return code if isinstance(code, int) else 1


if __name__ == "__main__":
    sys.exit(main())
