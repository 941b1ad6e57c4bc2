"""`ctr bench` without a cloud: the figure shape, the per-state durations read from a
Step Functions history, section isolation (a failing section is recorded and the others
still run), the output files, and that a function's environment is restored."""

from __future__ import annotations

import contextlib
import json
import math
import threading
from datetime import UTC, datetime, timedelta

import pytest

from ctr_infra.bench import cloud as bench_cloud
from ctr_infra.bench import pipeline, report, runner
from ctr_infra.bench.plan import FULL, QUICK
from ctr_infra.localcloud import CloudError


def test_a_figure_carries_unit_baseline_and_ratio():
    f = report.figure("x.y", "thing", 30.0, "MB/s", better="higher", n=3,
                     spread=report.min_max([20.0, 30.0, 35.0]), baseline=("other", 60.0))
    assert f == {"id": "x.y", "name": "thing", "value": 30.0, "unit": "MB/s", "n": 3,
                 "spread": {"kind": "min-max", "low": 20.0, "high": 35.0},
                 "baseline": {"name": "other", "value": 60.0, "unit": "MB/s"},
                 "ratio": 0.5, "better": "higher", "note": ""}
    alone = report.figure("x.z", "alone", 2.0, "s", better="lower")
    assert alone["baseline"] is None and alone["ratio"] is None


def test_rate_figure_is_the_median_rate_with_its_spread_and_the_baselines_median():
    f = report.rate_figure("r", "rate", 100.0, "MB/s", [1.0, 4.0, 2.0],
                          baseline=("fast", [0.5, 0.25, 1.0]))
    assert f["value"] == 50.0                       # median of 100, 25, 50
    assert (f["spread"]["low"], f["spread"]["high"], f["n"]) == (25.0, 100.0, 3)
    assert f["baseline"]["value"] == 200.0          # median of 200, 400, 100
    assert f["ratio"] == 0.25


def _event(kind: str, name: str, t: datetime, entered: bool) -> dict:
    key = "stateEnteredEventDetails" if entered else "stateExitedEventDetails"
    return {"type": f"{kind}State{'Entered' if entered else 'Exited'}", "timestamp": t,
            key: {"name": name}}


def test_state_durations_pair_entered_and_exited_events_in_order():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    at = lambda s: t0 + timedelta(seconds=s)  # noqa: E731
    events = [{"type": "ExecutionStarted", "timestamp": at(0)},
              _event("Task", "Chunk new lines", at(1), True),
              {"type": "TaskScheduled", "timestamp": at(1.1)},
              _event("Task", "Chunk new lines", at(4.5), False),
              _event("Choice", "Promoted?", at(5), True),
              _event("Choice", "Promoted?", at(5), False),
              _event("Map", "Aggregate chunks in parallel", at(6), True),
              _event("Map", "Aggregate chunks in parallel", at(16), False),
              _event("Task", "Train model", at(17), True)]       # never exited: left out
    assert pipeline.state_durations(events) == [("Chunk new lines", "Task", 3.5),
                                             ("Promoted?", "Choice", 0.0),
                                             ("Aggregate chunks in parallel", "Map", 10.0)]


def _fake_section(name):
    def section(plan, echo):
        return [report.figure(f"{name}.f", name, 1.5, "s", better="lower",
                             baseline=("b", 3.0))], {"plan": plan.mode}
    return section


def _broken_section(plan, echo):
    raise RuntimeError("disk on fire")


def test_a_failing_section_is_recorded_and_the_others_still_run(monkeypatch):
    monkeypatch.setattr(runner, "OFFLINE_SECTIONS", {"sizes": _fake_section("sizes"),
                                                    "training": _broken_section,
                                                    "data": _fake_section("data")})
    results = runner.run(QUICK, only=("sizes", "training", "data"), echo=lambda _: None)

    sections = results["sections"]
    assert list(sections) == list(runner.SECTIONS)
    assert sections["sizes"]["status"] == sections["data"]["status"] == "ok"
    assert sections["training"] == {"status": "error", "figures": [], "raw": None,
                                    "error": "RuntimeError: disk on fire",
                                    "seconds": sections["training"]["seconds"]}
    assert sections["pipeline"]["status"] == sections["serving"]["status"] == "skipped"
    assert results["cloud"] is None                 # no cloud section, no cloud started
    assert results["schema"] == runner.SCHEMA and results["mode"] == "quick"
    assert {"cpu_model", "cores", "ram_gib", "os", "python", "date",
            "load_average", "load_average_end"} <= set(results["machine"])


@pytest.mark.parametrize("plan", [QUICK, FULL], ids=["early", "lazy"])
def test_a_cloud_that_cannot_start_fails_both_cloud_sections_once(monkeypatch, plan):
    starts = []

    @contextlib.contextmanager
    def no_cloud(echo):
        starts.append(1)
        raise CloudError("port 4566 is already in use")
        yield

    monkeypatch.setattr(runner, "private_cloud", no_cloud)
    results = runner.run(plan, only=("pipeline", "serving"), echo=lambda _: None)

    assert len(starts) == 1
    for name in ("pipeline", "serving"):
        entry = results["sections"][name]
        assert entry["status"] == "error"
        assert "port 4566 is already in use" in entry["error"]


def test_unknown_sections_are_refused():
    with pytest.raises(ValueError, match="unknown section"):
        runner.run(QUICK, only=("sizes", "speed"))


def test_results_are_json_safe_and_written_whole(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "OFFLINE_SECTIONS", {"sizes": _fake_section("sizes"),
                                                    "training": _broken_section,
                                                    "data": _fake_section("data")})
    results = runner.run(QUICK, only=("sizes", "training", "data"), echo=lambda _: None)
    results["sections"]["data"]["raw"] = report.json_safe({"nan": math.nan, 3: (1, 2)})

    paths = report.write(results, tmp_path / "bench")
    again = report.write(results, tmp_path / "bench")       # same run: same files

    assert paths == again
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == sorted(
        [paths["json"].name, paths["copy"].name, paths["markdown"].name])
    assert paths["copy"].name.endswith("-quick.json")
    loaded = json.loads(paths["json"].read_text())
    assert loaded == json.loads(paths["copy"].read_text())
    assert loaded["sections"]["data"]["raw"] == {"nan": None, "3": [1, 2]}
    markdown = paths["markdown"].read_text()
    assert "| sizes | sizes | 1.50 s | - | 1 | b | 3.00 s | 0.50x |" in markdown
    assert "**training failed**: RuntimeError: disk on fire" in markdown
    assert "pipeline" not in markdown                      # skipped sections add no rows


class _FakeLambda:
    def __init__(self, env, aliases=()):
        self.env = dict(env)
        self.updates = []
        self.aliases = dict.fromkeys(aliases, "1")
        self.versions: dict[str, dict[str, str]] = {}

    def get_function_configuration(self, FunctionName, Qualifier=None):
        env = self.env if Qualifier is None else self.versions[Qualifier]
        return {"Environment": {"Variables": dict(env)},
                "LastUpdateStatus": "Successful", "State": "Active"}

    def update_function_configuration(self, FunctionName, Environment):
        self.env = dict(Environment["Variables"])
        self.updates.append(self.env)

    def list_aliases(self, FunctionName):
        return {"Aliases": [{"Name": name} for name in self.aliases]}

    def publish_version(self, FunctionName):
        version = str(len(self.versions) + 2)
        self.versions[version] = dict(self.env)
        return {"Version": version}

    def update_alias(self, FunctionName, Name, FunctionVersion):
        self.aliases[Name] = FunctionVersion


def test_function_env_restores_the_original_environment_even_after_an_error():
    lam = _FakeLambda({"BUCKET_NAME": "b", "CHUNK_LINES": "1000000"})
    cloud = bench_cloud.BenchCloud(cfg=None, outputs={"ChunkFunctionName": "chunk-fn"},
                             private=True, startup_s=0.0, _clients={"lambda": lam})
    with pytest.raises(KeyError), bench_cloud.function_env(cloud, "ChunkFunction",
                                                     CHUNK_LINES="20000") as set_env:
        assert lam.env == {"BUCKET_NAME": "b", "CHUNK_LINES": "20000"}
        set_env(EXTRA="1")
        assert lam.env == {"BUCKET_NAME": "b", "CHUNK_LINES": "20000", "EXTRA": "1"}
        raise KeyError("boom")
    assert lam.env == {"BUCKET_NAME": "b", "CHUNK_LINES": "1000000"}
    assert len(lam.updates) == 3
    assert lam.versions == {}                 # no alias: nothing published


def test_an_environment_change_reaches_the_alias_the_api_invokes():
    """AutoPublishAlias: the alias runs an immutable version, so a change of $LATEST is
    published and the alias moved, as a deploy of the changed template does."""
    lam = _FakeLambda({"BUCKET_NAME": "b"}, aliases=["live"])
    cloud = bench_cloud.BenchCloud(cfg=None, outputs={"PredictFunctionName": "predict-fn"},
                             private=True, startup_s=0.0, _clients={"lambda": lam})
    with bench_cloud.function_env(cloud, "PredictFunction", PREDICTION_LOG_SAMPLE_RATE="1.0"):
        live = lam.aliases["live"]
        assert lam.versions[live] == {"BUCKET_NAME": "b", "PREDICTION_LOG_SAMPLE_RATE": "1.0"}
    assert lam.versions[lam.aliases["live"]] == {"BUCKET_NAME": "b"}


def test_quick_is_smaller_than_full_in_every_size():
    for name in ("data_chunk_lines", "train_rows", "pipeline_lines", "serve_requests",
                 "serve_api_requests", "cold_starts"):
        assert getattr(QUICK, name) < getattr(FULL, name), name
    assert FULL.data_chunks == 10 and FULL.train_rows == 2_000_000
    assert FULL.pipeline_lines == 1_000_000


def test_a_cloud_started_early_is_stopped_once_and_kept_when_interrupted():
    events = []

    @contextlib.contextmanager
    def fake_cloud():
        events.append("start")
        cloud = bench_cloud.BenchCloud(cfg=None, outputs={}, private=True, startup_s=0.0)
        yield cloud
        events.append(("stop", cloud.keep_state))

    with bench_cloud.started_early(fake_cloud()) as get:
        assert get().private is True
    assert events == ["start", ("stop", False)]

    events.clear()
    with pytest.raises(KeyboardInterrupt), bench_cloud.started_early(fake_cloud()):
        raise KeyboardInterrupt
    assert events == ["start", ("stop", True)]


def test_in_process_timing_works_inside_a_running_event_loop():
    """Playwright's sync API keeps a loop running in the pytest process; Mangum must
    still get a loop of its own (it failed with 'This event loop is already running')."""
    import asyncio

    from ctr_infra.bench.serve import off_running_loop

    def uses_the_thread_loop() -> int:
        loop = asyncio.get_event_loop()
        return loop.run_until_complete(asyncio.sleep(0, result=7))

    async def inside() -> int:
        return off_running_loop(uses_the_thread_loop)

    # Our own running loop, in a thread of its own: the pytest process may already run
    # one in the main thread (the very situation this is about).
    box: dict[str, int] = {}
    runner = threading.Thread(target=lambda: box.update(value=asyncio.run(inside())))
    runner.start()
    runner.join()
    assert box == {"value": 7}
    assert off_running_loop(lambda: 3) == 3
