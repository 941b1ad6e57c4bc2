"""Score function: batch scoring of a Criteo TSV file in S3 (ctr.scoring).

Event: `ctr.steps.ScoreEvent`, from statemachine/score.asl.json. {"action": "plan"}
pins the production version and cuts the input into line-aligned ranges
(`ScorePlan`); {"action": "range"} scores one range into its create-only output part
(`ScoredRange`); {"action": "manifest"} checks the ranges and writes the manifest
(`ScoreManifest`). Settings: SCORE_RANGE_BYTES, SCORE_MAX_CONCURRENCY (the plan's
defaults; the execution input may override both).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ctr import scoring
from ctr.errors import ValidationError
from ctr.function import FunctionSettings, add_metrics, bucket_store, entry_point, observability
from ctr.steps import ScoreEvent, parse_event

logger, tracer, metrics = observability()


class Settings(FunctionSettings):
    score_range_bytes: int = scoring.DEFAULT_RANGE_BYTES
    score_max_concurrency: int = scoring.DEFAULT_MAX_CONCURRENCY


settings = Settings()  # type: ignore[call-arg]  # values come from the environment
store = bucket_store(settings)


def _missing(*names: str) -> ValidationError:
    return ValidationError(f"missing {', '.join(names)}",
                           errors=[{"loc": [n], "msg": "required for this action"}
                                   for n in names])


@entry_point(logger, tracer, metrics)
def lambda_handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    request = parse_event(ScoreEvent, event)
    if request.action == "plan":
        if not request.run_id:
            raise _missing("run_id")
        planned = scoring.plan(
            store, input_key=request.input_key, output_prefix=request.output_prefix,
            run_id=request.run_id,
            range_bytes=request.range_bytes or settings.score_range_bytes,
            max_concurrency=request.max_concurrency or settings.score_max_concurrency)
        logger.info("score plan", extra=planned.model_dump(mode="json", exclude={"ranges"}))
        return planned.to_payload()
    if request.action == "range":
        needed = {"input_key": request.input_key, "index": request.index,
                  "start": request.start, "end": request.end,
                  "model_prefix": request.model_prefix,
                  "model_version": request.model_version, "run_prefix": request.run_prefix}
        if any(v is None for v in needed.values()):
            raise _missing(*(k for k, v in needed.items() if v is None))
        scored = scoring.score_range(
            store, input_key=str(request.input_key), index=int(request.index or 0),
            start=int(request.start or 0), end=int(request.end or 0),
            compressed=request.compressed, model_prefix=str(request.model_prefix),
            model_version=int(request.model_version or 0), run_prefix=str(request.run_prefix))
        add_metrics(metrics, {
            "ScoreLines": (MetricUnit.Count, scored.lines),
            "ScoreRowsRejected": (MetricUnit.Count, scored.rejects),
            "ScoreRangeSeconds": (MetricUnit.Seconds, scored.seconds),
        })
        return scored.to_payload()
    if request.plan is None or request.ranges is None:
        raise _missing(*(k for k in ("plan", "ranges") if getattr(request, k) is None))
    manifest = scoring.write_manifest(store, request.plan, request.ranges)
    logger.info("score manifest", extra=manifest.model_dump(mode="json", exclude={"parts"}))
    return manifest.to_payload()
