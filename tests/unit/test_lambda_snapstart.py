"""The process executor's SnapStart emulation, without LocalStack: a snapshot template
(the handler imported, before-snapshot hooks run) forks one process per execution
environment; each runs the after-restore hooks and then behaves like a cold-started
environment (same protocol, errors, timeouts, logs). Real processes, real fork()."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ctr_lambda_executor.worker import SnapshotTemplate, SnapshotUnavailable, Worker, WorkerSpec
from tests.unit.test_lambda_worker import FAILING_HANDLERS

# The module counts its imports in a file, so a test sees how often init ran.
HANDLERS = '''
import json, os, random, time
try:
    from snapshot_restore_py import register_after_restore, register_before_snapshot
except ImportError:  # no SnapStart runtime (a cold start): hooks never run
    def register_before_snapshot(func, *args, **kwargs):
        return func
    register_after_restore = register_before_snapshot

with open(os.environ["COUNT_FILE"], "a") as fh:
    fh.write(f"import {os.getpid()}\\n")
time.sleep(float(os.environ.get("INIT_SLEEP", "0")))
INIT_PID = os.getpid()
STATE = {"order": [], "restored_in": None, "draw": None}

def first_before(tag):
    STATE["order"].append("before:" + tag)

def second_before(tag):
    STATE["order"].append("before:" + tag)
    STATE["warm"] = os.environ.get("SNAP_ONLY")

@register_after_restore
def restore_a():
    STATE["order"].append("after:a")
    STATE["restored_in"] = os.getpid()
    random.seed()
    STATE["draw"] = random.random()

def restore_b(tag, *, suffix):
    STATE["order"].append("after:" + tag + suffix)

register_before_snapshot(first_before, "1")
register_before_snapshot(second_before, "2")
register_after_restore(restore_b, "b", suffix="!")

def ok(event, context):
    print("hello from", context.function_name, flush=True)
    return {"echo": event, "pid": os.getpid(), "init_pid": INIT_PID, "state": STATE,
            "init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
            "snap_only": os.environ.get("SNAP_ONLY"), "env_var": os.environ.get("PER_ENV"),
            "remaining_ms": context.get_remaining_time_in_millis()}
''' + FAILING_HANDLERS


def write_code(tmp_path: Path, code: str = HANDLERS) -> Path:
    code_dir = tmp_path / "code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / "app.py").write_text(code)
    return code_dir


def spec_for(tmp_path: Path, handler: str, env: dict[str, str], **kw) -> WorkerSpec:
    return WorkerSpec(python=sys.executable, handler=handler, code_dir=tmp_path / "code",
                      env={"AWS_LAMBDA_FUNCTION_NAME": "fn-under-test",
                           "COUNT_FILE": str(tmp_path / "imports.txt"), **env},
                      function_name="fn-under-test", log_file=tmp_path / "fn.log", **kw)


def template_for(tmp_path: Path, handler: str = "app.ok", code: str = HANDLERS,
                 **env: str) -> SnapshotTemplate:
    write_code(tmp_path, code)
    template = SnapshotTemplate(spec_for(tmp_path, handler, {"SNAP_ONLY": "template",
                                                             **env}))
    template.start(timeout_s=60)
    return template


def restored_worker(tmp_path: Path, template: SnapshotTemplate, handler: str = "app.ok",
                    **env: str) -> Worker:
    worker = Worker(spec_for(tmp_path, handler, {"PER_ENV": "environment", **env}),
                    template=template)
    worker.start(startup_timeout=30)
    return worker


def call(worker: Worker, event: dict, timeout_s: float = 10, rid: str = "req-1"):
    return worker.invoke(rid, json.dumps(event), "arn:aws:lambda:us-east-1:0:function:fn",
                         timeout_s)


def imports(tmp_path: Path) -> list[str]:
    return (tmp_path / "imports.txt").read_text().splitlines()


def test_environments_are_forks_of_one_init_with_hooks_in_lambdas_order(tmp_path):
    template = template_for(tmp_path)
    workers = [restored_worker(tmp_path, template) for _ in range(2)]
    try:
        bodies = [json.loads(call(w, {"x": i}).payload) for i, w in enumerate(workers)]
        # init (the import) ran once, in the template; each environment is another process
        assert imports(tmp_path) == [f"import {template.proc.pid}"]
        assert {b["init_pid"] for b in bodies} == {template.proc.pid}
        assert len({b["pid"] for b in bodies} | {template.proc.pid}) == 3
        for body, worker in zip(bodies, workers, strict=True):
            # before-snapshot hooks in reverse order of registration (once, before the
            # fork); after-restore hooks in order, in the environment's own process
            assert body["state"]["order"] == ["before:2", "before:1", "after:a", "after:b!"]
            assert body["state"]["restored_in"] == body["pid"]
            assert body["state"]["warm"] == "template"     # what init saw is kept
            # the environment's variables replace the snapshot's
            assert body["env_var"] == "environment" and body["snap_only"] is None
            assert body["init_type"] == "snap-start"
            assert 0 < body["remaining_ms"] <= 10_000
            assert worker.restores == 1 and worker.cold_starts == 1
        # a restore hook that reseeds gives each copy its own random sequence
        assert bodies[0]["state"]["draw"] != bodies[1]["state"]["draw"]
        # warm: the second invocation reuses the environment
        again = json.loads(call(workers[0], {"x": 9}, rid="req-2").payload)
        assert again["pid"] == bodies[0]["pid"] and workers[0].cold_starts == 1
        out = call(workers[1], {}, rid="req-3")
        assert "hello from fn-under-test" in out.logs
        assert "START RequestId: req-3" in out.logs and "REPORT RequestId: req-3" in out.logs
        log = (tmp_path / "fn.log").read_text()
        assert "hello from fn-under-test" in log and "snapshot taken" in log
    finally:
        for w in workers:
            w.stop()
        template.stop()


def test_a_restore_skips_the_init_a_cold_start_pays(tmp_path):
    template = template_for(tmp_path, INIT_SLEEP="1.5")
    try:
        started = time.monotonic()
        worker = restored_worker(tmp_path, template, INIT_SLEEP="1.5")
        restored_s = time.monotonic() - started
        assert call(worker, {}).ok
        worker.stop()
        cold = Worker(spec_for(tmp_path, "app.ok", {"INIT_SLEEP": "1.5"}))
        started = time.monotonic()
        cold.start(startup_timeout=30)
        cold_s = time.monotonic() - started
        cold.stop()
        assert cold_s >= 1.5 > restored_s + 0.5, (cold_s, restored_s)
    finally:
        template.stop()


def test_errors_timeouts_and_exits_as_in_a_cold_started_environment(tmp_path):
    template = template_for(tmp_path)
    try:
        w = restored_worker(tmp_path, template, handler="app.boom")
        err = json.loads(call(w, {"why": "bad input"}).payload)
        assert err["errorType"] == "BadThing" and err["errorMessage"] == "it broke: bad input"
        assert err["stackTrace"]
        w.stop()

        w = restored_worker(tmp_path, template, handler="app.sleepy")
        out = call(w, {"seconds": 30}, timeout_s=1.0)
        err = json.loads(out.payload)
        assert not out.ok and err["errorType"] == "Sandbox.Timedout"
        assert not w.alive()
        assert json.loads(call(w, {"seconds": 0}, rid="req-2").payload) == {"slept": True}
        assert w.restores == 2          # the next environment is restored again
        w.stop()

        w = restored_worker(tmp_path, template, handler="app.exits")
        err = json.loads(call(w, {}).payload)
        assert err["errorType"] == "Runtime.ExitError"
        assert "exit status 3" in err["errorMessage"]    # reported by the template
        w.stop()
    finally:
        template.stop()


def test_an_environment_that_died_between_invocations_is_replaced(tmp_path):
    template = template_for(tmp_path)
    w = restored_worker(tmp_path, template)
    try:
        first = json.loads(call(w, {}).payload)["pid"]
        os.kill(first, 9)
        deadline = time.monotonic() + 10
        while w.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not w.alive()
        second = json.loads(call(w, {}, rid="req-2").payload)["pid"]
        assert second != first and w.restores == 2
    finally:
        w.stop()
        template.stop()


def test_stop_ends_the_restored_process_and_its_children(tmp_path):
    code = HANDLERS + textwrap.dedent('''
        import subprocess, sys
        def spawn(e, c):
            p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            return {"child": p.pid, "me": os.getpid()}
    ''')
    template = template_for(tmp_path, code=code)
    w = restored_worker(tmp_path, template, handler="app.spawn")
    pids = json.loads(call(w, {}).payload)
    w.stop()
    try:
        deadline = time.monotonic() + 5
        alive = set(pids.values())
        while alive and time.monotonic() < deadline:
            for pid in list(alive):
                stat = Path(f"/proc/{pid}/stat")
                if not stat.exists() or stat.read_text().split()[2] == "Z":
                    alive.discard(pid)
            time.sleep(0.1)
        assert not alive, f"survived stop(): {alive}"
    finally:
        template.stop()


@pytest.mark.parametrize("code, why", [
    (HANDLERS + "\nregister_before_snapshot(lambda: 1 / 0)\n", "ZeroDivisionError"),
    (HANDLERS + "\nimport threading\nthreading.Thread(target=time.sleep, args=(30,),"
                " name='busy-worker', daemon=True).start()\n", "busy-worker"),
    ("import does_not_exist_anywhere\n", "does_not_exist_anywhere"),
])
def test_a_failed_snapshot_says_why_and_environments_start_cold(tmp_path, code, why):
    write_code(tmp_path, code)
    template = SnapshotTemplate(spec_for(tmp_path, "app.ok", {}))
    with pytest.raises(SnapshotUnavailable, match=why):
        template.start(timeout_s=60)
    assert not template.alive()
    (tmp_path / "code" / "app.py").write_text(HANDLERS)
    w = restored_worker(tmp_path, template)     # the template is not running: cold start
    try:
        body = json.loads(call(w, {}).payload)
        assert w.restores == 0 and w.cold_starts == 1 and w.fallback
        assert body["init_pid"] == body["pid"] and body["init_type"] is None
        assert "starts cold" in (tmp_path / "fn.log").read_text()
    finally:
        w.stop()


def test_a_failing_restore_hook_is_an_init_error(tmp_path):
    code = HANDLERS + "\nregister_after_restore(lambda: 1 / 0)\n"
    template = template_for(tmp_path, code=code)
    w = restored_worker(tmp_path, template)
    try:
        err = json.loads(call(w, {}).payload)
        assert err["errorType"] == "Runtime.AfterRestoreError"
        assert "division by zero" in err["errorMessage"]
    finally:
        w.stop()
        template.stop()


def test_changed_sources_are_not_served_from_an_old_snapshot(tmp_path):
    write_code(tmp_path)
    template = SnapshotTemplate(spec_for(tmp_path, "app.ok", {}, hot_reload=True))
    template.start(timeout_s=60)
    try:
        app = tmp_path / "code" / "app.py"
        app.write_text(HANDLERS.replace('"echo": event', '"echo": "edited"'))
        future = time.time() + 5
        os.utime(app, (future, future))
        assert template.stale()
        w = Worker(spec_for(tmp_path, "app.ok", {}, hot_reload=True), template=template)
        w.start(startup_timeout=30)
        try:
            assert json.loads(call(w, {}).payload)["echo"] == "edited"
            assert w.restores == 0 and "sources changed" in (w.fallback or "")
        finally:
            w.stop()
    finally:
        template.stop()


def test_the_template_ends_when_its_socket_closes(tmp_path):
    template = template_for(tmp_path)
    proc = template.proc
    assert proc is not None
    template._ctl.close()   # as when LocalStack drops the version
    template._ctl = None
    assert proc.wait(timeout=10) == 0


# A restored copy predicting with the real model: XGBoost (GNU OpenMP) and Arrow after
# fork(). The snapshot loads the model and predicts/explains once, as the predict
# function's before-snapshot hook does; the copy predicts many rows, explains, and loads
# a fresh booster (a reload) that predicts with XGBoost's default threads and with 2.
MODEL_HANDLER = '''
import os
from pathlib import Path
import pyarrow as pa
import pyarrow.parquet as pq
from snapshot_restore_py import register_before_snapshot
from ctr.criteo import FEATURE_SCHEMA
from ctr.predictor import Predictor
from ctr.schema import FEATURE_COLUMNS

MODEL = {}

def warm():
    model = Predictor.load(Path(os.environ["MODEL_DIR"]))
    model.use_threads(1)
    row = pa.Table.from_pylist([dict.fromkeys(FEATURE_COLUMNS)], schema=FEATURE_SCHEMA)
    model.predict_table(row)
    model.explain_table(row)
    MODEL["warm"] = model

register_before_snapshot(warm)

def predict(event, context):
    table = pq.read_table(os.environ["TABLE"])
    warm_model = MODEL["warm"]
    fresh = Predictor.load(Path(os.environ["MODEL_DIR"]))
    default = fresh.predict_table(table)
    fresh.use_threads(2)
    return {"warm": float(warm_model.predict_table(table).sum()),
            "explained": float(warm_model.explain_table(table.slice(0, 300)).base.sum()),
            "fresh_default": float(default.sum()),
            "fresh_two": float(fresh.predict_table(table).sum())}
'''


def model_template(tmp_path: Path, omp_threads: str | None) -> tuple[SnapshotTemplate, Worker,
                                                                       float]:
    import pyarrow.parquet as pq

    from tests.unit.serving_support import sample_table, tiny_predictor

    predictor = tiny_predictor(0)
    predictor.save(tmp_path / "model")
    table = sample_table(3000, seed=1)
    pq.write_table(table, tmp_path / "table.parquet")
    expected = float(predictor.predict_table(table).sum())
    write_code(tmp_path, MODEL_HANDLER)
    layer = Path(__file__).resolve().parents[2] / "layers" / "ctr"
    env = {"MODEL_DIR": str(tmp_path / "model"), "TABLE": str(tmp_path / "table.parquet")}
    spec = WorkerSpec(python=sys.executable, handler="app.predict", code_dir=tmp_path / "code",
                      layer_dirs=[layer], env=env, function_name="model-fn")
    template = SnapshotTemplate(spec, omp_threads=omp_threads)
    template.start(timeout_s=120)
    worker = Worker(spec, template=template)
    worker.start(startup_timeout=30)
    return template, worker, expected


def test_a_restored_copy_predicts_with_the_real_model(tmp_path):
    template, worker, expected = model_template(tmp_path, omp_threads="1")
    try:
        out = call(worker, {}, timeout_s=60)
        assert out.ok, out.payload
        body = json.loads(out.payload)
        assert worker.restores == 1
        for key in ("warm", "fresh_default", "fresh_two"):
            assert body[key] == pytest.approx(expected, rel=1e-9), key
        assert body["explained"] != 0
    finally:
        worker.stop()
        template.stop()


def test_without_the_single_threaded_init_a_copy_hangs_in_openmp(tmp_path):
    """The control: a template whose OpenMP runtime started a 2-thread team (XGBoost's
    model load does) makes its copies wait forever in their next parallel region --
    what the single-threaded init above prevents."""
    template, worker, _ = model_template(tmp_path, omp_threads="2")
    try:
        out = call(worker, {}, timeout_s=10)
        assert not out.ok
        assert json.loads(out.payload)["errorType"] == "Sandbox.Timedout"
    finally:
        worker.stop()
        template.stop()
