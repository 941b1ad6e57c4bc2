"""The process Lambda runtime, without LocalStack: start, invoke, errors, timeout, logs,
hot reload. Each test writes a tiny function into tmp_path and runs it in a real process."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ctr_lambda_executor.worker import Worker, WorkerSpec, python_path_for

# Handlers that fail each way a function can (shared with test_lambda_snapstart): an
# exception, a timeout, an exit.
FAILING_HANDLERS = '''
class BadThing(Exception):
    pass

def boom(event, context):
    raise BadThing("it broke: " + str(event.get("why")))

def sleepy(event, context):
    time.sleep(event.get("seconds", 10))
    return {"slept": True}

def exits(event, context):
    os._exit(3)
'''

HANDLERS = '''
import json, os, time
INIT_PID = os.getpid()

def ok(event, context):
    print("hello from", context.function_name)
    return {"echo": event, "request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "pid": INIT_PID, "endpoint": os.environ.get("AWS_ENDPOINT_URL")}
''' + FAILING_HANDLERS


def make_worker(tmp_path: Path, handler: str, code: str = HANDLERS, **kw) -> Worker:
    code_dir = tmp_path / "code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / "app.py").write_text(code)
    spec = WorkerSpec(python=sys.executable, handler=handler, code_dir=code_dir,
                      env={"AWS_LAMBDA_FUNCTION_NAME": "fn-under-test",
                           "AWS_ENDPOINT_URL": "http://127.0.0.1:1"},
                      function_name="fn-under-test", log_file=tmp_path / "fn.log", **kw)
    worker = Worker(spec)
    worker.start(startup_timeout=30)
    return worker


def call(worker: Worker, event: dict, timeout_s: float = 10, rid: str = "req-1"):
    return worker.invoke(rid, json.dumps(event), "arn:aws:lambda:us-east-1:0:function:fn",
                         timeout_s)


def test_result_context_environment_and_logs(tmp_path):
    w = make_worker(tmp_path, "app.ok")
    try:
        out = call(w, {"x": 1})
        body = json.loads(out.payload)
        assert out.ok
        assert body["echo"] == {"x": 1}
        assert body["request_id"] == "req-1"
        assert 0 < body["remaining_ms"] <= 10_000
        assert body["endpoint"] == "http://127.0.0.1:1"
        assert "START RequestId: req-1" in out.logs
        assert "hello from fn-under-test" in out.logs
        assert "END RequestId: req-1" in out.logs and "REPORT RequestId: req-1" in out.logs
        assert "hello from fn-under-test" in (tmp_path / "fn.log").read_text()
        # warm: the second invocation reuses the same process (no second init)
        again = json.loads(call(w, {"x": 2}, rid="req-2").payload)
        assert again["pid"] == body["pid"] and w.cold_starts == 1
    finally:
        w.stop()


def test_handler_exception_is_a_lambda_error_with_its_type(tmp_path):
    w = make_worker(tmp_path, "app.boom")
    try:
        out = call(w, {"why": "bad input"})
        err = json.loads(out.payload)
        assert not out.ok
        assert err["errorType"] == "BadThing"
        assert err["errorMessage"] == "it broke: bad input"
        assert isinstance(err["stackTrace"], list) and err["stackTrace"]
        assert "[ERROR] BadThing: it broke: bad input" in out.logs
    finally:
        w.stop()


def test_timeout_kills_the_process_and_the_next_call_starts_fresh(tmp_path):
    w = make_worker(tmp_path, "app.sleepy")
    try:
        t0 = time.monotonic()
        out = call(w, {"seconds": 30}, timeout_s=1.0)
        assert time.monotonic() - t0 < 10
        err = json.loads(out.payload)
        assert not out.ok and err["errorType"] == "Sandbox.Timedout"
        assert "Task timed out after 1.00 seconds" in err["errorMessage"]
        assert not w.alive()
        out2 = call(w, {"seconds": 0}, rid="req-2")
        assert out2.ok and json.loads(out2.payload) == {"slept": True}
        assert w.cold_starts == 2
    finally:
        w.stop()


def test_runtime_exit_is_reported_and_recovered(tmp_path):
    w = make_worker(tmp_path, "app.exits")
    try:
        out = call(w, {})
        err = json.loads(out.payload)
        assert not out.ok and err["errorType"] == "Runtime.ExitError"
        assert "exit status 3" in err["errorMessage"]
    finally:
        w.stop()


def test_import_error_is_reported_on_invoke(tmp_path):
    w = make_worker(tmp_path, "app.ok", code="import does_not_exist_anywhere\n")
    try:
        out = call(w, {})
        err = json.loads(out.payload)
        assert not out.ok and err["errorType"] == "Runtime.ImportModuleError"
        assert "does_not_exist_anywhere" in err["errorMessage"]
    finally:
        w.stop()


def test_missing_handler_function(tmp_path):
    w = make_worker(tmp_path, "app.nope")
    try:
        err = json.loads(call(w, {}).payload)
        assert err["errorType"] == "AttributeError" and "nope" in err["errorMessage"]
    finally:
        w.stop()


def test_hot_reload_picks_up_edited_code(tmp_path):
    w = make_worker(tmp_path, "app.f", code="def f(e, c):\n    return 1\n", hot_reload=True)
    try:
        assert json.loads(call(w, {}).payload) == 1
        time.sleep(0.05)
        app = tmp_path / "code" / "app.py"
        app.write_text("def f(e, c):\n    return 2\n")
        future = time.time() + 5
        import os
        os.utime(app, (future, future))
        assert json.loads(call(w, {}, rid="req-2").payload) == 2
    finally:
        w.stop()


def test_stop_kills_the_process_group(tmp_path):
    code = textwrap.dedent('''
        import subprocess, sys
        def spawn(e, c):
            p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            return p.pid
    ''')
    w = make_worker(tmp_path, "app.spawn", code=code)
    child = json.loads(call(w, {}).payload)
    w.stop()
    import os
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # a zombie still answers kill(0); check /proc state
        stat = Path(f"/proc/{child}/stat")
        if not stat.exists() or stat.read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail("grandchild process survived stop()")


def test_layer_python_dirs_go_on_the_path(tmp_path):
    layer = tmp_path / "layer"
    (layer / "python").mkdir(parents=True)
    plain = tmp_path / "plain"
    plain.mkdir()
    assert python_path_for(tmp_path / "code", [layer, plain]) == [
        str(tmp_path / "code"), str(layer / "python"), str(plain)]
