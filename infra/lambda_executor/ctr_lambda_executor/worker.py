"""One Lambda execution environment as a local process: start, invoke, time out, stop.

Independent of LocalStack (standard library only) so it can be unit-tested alone;
`executor.ProcessRuntimeExecutor` adapts it to LocalStack's RuntimeExecutor API.

Lambda semantics kept here:
- init phase = importing the handler module, once per environment ("warm" after that);
  an import failure is returned by each invocation as `Runtime.ImportModuleError`;
- the function timeout is enforced: the process is killed and the invocation answers
  `Sandbox.Timedout`; the next invocation gets a fresh process (cold start);
- a handler exception answers Lambda's error JSON (`errorType`, `errorMessage`,
  `stackTrace`), which Step Functions Retry/Catch match by `errorType`;
- stdout/stderr of the handler become the invocation's log (START/END/REPORT lines
  like Lambda's), returned to LocalStack (-> CloudWatch Logs) and appended to a
  per-function log file;
- code given as a local directory (hot reload) is re-imported when a file changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ctr_lambda_executor.bootstrap import END_MARKER

BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
# Variables of the host worth passing on; the rest of the host environment is not
# the function's business (as in Lambda, where the sandbox starts clean).
HOST_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "PYENV_VERSION")


@dataclass
class Outcome:
    ok: bool
    payload: bytes
    logs: str


@dataclass
class WorkerSpec:
    python: str                      # interpreter that runs the function
    handler: str                     # e.g. "app.lambda_handler"
    code_dir: Path
    layer_dirs: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    function_name: str = "function"
    hot_reload: bool = False
    log_file: Path | None = None


def python_path_for(code_dir: Path, layer_dirs: Iterable[Path]) -> list[str]:
    """Lambda's import path: the code dir, then each layer's python/ dir (as /opt/python)."""
    paths = [str(code_dir)]
    for layer in layer_dirs:
        sub = layer / "python"
        paths.append(str(sub if sub.is_dir() else layer))
    return paths


def source_mtime(dirs: Iterable[Path]) -> float:
    """Newest modification time of any Python file below `dirs` (hot-reload check)."""
    newest = 0.0
    for d in dirs:
        for root, subdirs, files in os.walk(d):
            subdirs[:] = [s for s in subdirs if s != "__pycache__" and not s.startswith(".")]
            for f in files:
                if f.endswith(".py"):
                    with contextlib.suppress(FileNotFoundError):
                        newest = max(newest, os.stat(os.path.join(root, f)).st_mtime)
    return newest


class Worker:
    def __init__(self, spec: WorkerSpec, log_sink: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self._cmd = None
        self._res_fd: int | None = None
        self._res_buf = b""
        self._lines: deque[str] = deque(maxlen=20000)   # recent output, for get_logs()
        self._current: list[str] | None = None          # output of the running invocation
        self._end_seen = threading.Event()
        self._lock = threading.Lock()
        self._init_error: dict[str, object] | None = None
        self._started_mtime = 0.0
        self._log_sink = log_sink
        self.cold_starts = 0

    # --- lifecycle ---------------------------------------------------------
    def start(self, startup_timeout: float = 60.0) -> None:
        spec = self.spec
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        env = {k: os.environ[k] for k in HOST_ENV_KEEP if k in os.environ}
        env.update(spec.env)
        env.update({
            "_HANDLER": spec.handler,
            "PYTHONPATH": os.pathsep.join(python_path_for(spec.code_dir, spec.layer_dirs)),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "CTR_CODE_DIR": str(spec.code_dir),
            "CTR_CMD_FD": str(cmd_r),
            "CTR_RESULT_FD": str(res_w),
        })
        if spec.hot_reload:
            self._started_mtime = source_mtime([spec.code_dir, *spec.layer_dirs])
        # -I is not used: PYTHONPATH must apply. -s: no user site-packages.
        self.proc = subprocess.Popen(
            [spec.python, "-s", str(BOOTSTRAP)],
            env=env, cwd=str(spec.code_dir), pass_fds=(cmd_r, res_w),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() kills what it spawned too
        )
        os.close(cmd_r)
        os.close(res_w)
        self._cmd = os.fdopen(cmd_w, "w", encoding="utf-8")
        self._res_fd, self._res_buf = res_r, b""
        self.cold_starts += 1
        threading.Thread(target=self._pump_output, args=(self.proc,), daemon=True).start()
        first = self._read_result(startup_timeout)
        if first is None or first.get("type") == "exit":
            self.stop()
            raise RuntimeError(f"{spec.function_name}: runtime did not start within "
                               f"{startup_timeout:.0f}s:\n{self.recent_logs()}")
        self._init_error = first.get("error") if first.get("type") == "init_error" else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stale(self) -> bool:
        """True if hot-reloaded sources changed since this process started."""
        if not self.spec.hot_reload:
            return False
        dirs = [self.spec.code_dir, *self.spec.layer_dirs]
        return source_mtime(dirs) > self._started_mtime

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        try:
            if self._cmd:
                self._cmd.close()
        except OSError:  # the process is gone already (broken pipe)
            pass
        if self._res_fd is not None:
            os.close(self._res_fd)
        self._cmd, self._res_fd = None, None
        if proc and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    # --- invocation --------------------------------------------------------
    def invoke(self, request_id: str, payload: str, arn: str, timeout_s: float,
               trace_id: str = "") -> Outcome:
        with self._lock:  # one invocation at a time per environment, as in Lambda
            return self._invoke(request_id, payload, arn, timeout_s, trace_id)

    def _invoke(self, request_id: str, payload: str, arn: str, timeout_s: float,
                trace_id: str) -> Outcome:
        if not self.alive() or self.stale() or self._init_error is not None:
            self.stop()
            self.start()
        started = time.monotonic()
        self._current = [f"START RequestId: {request_id} Version: $LATEST\n"]
        self._end_seen.clear()
        if self._init_error is not None:
            err = dict(self._init_error)
            return self._finish(request_id, False, json.dumps(err).encode(), started)
        assert self._cmd is not None
        try:
            self._cmd.write(json.dumps({"request_id": request_id, "payload": payload,
                                        "arn": arn, "timeout_s": timeout_s,
                                        "trace_id": trace_id}) + "\n")
            self._cmd.flush()
            msg = self._read_result(timeout_s)
        except BrokenPipeError:  # the runtime died between invocations
            msg = None
        if msg is None or msg.get("type") == "exit":
            if msg is None:  # still running: time out, as Lambda does
                self.stop()
                err = {"errorType": "Sandbox.Timedout",
                       "errorMessage": f"{datetime.now(UTC).isoformat()} {request_id} "
                                       f"Task timed out after {timeout_s:.2f} seconds"}
                self._log(f"{datetime.now(UTC).isoformat()} {request_id} "
                          f"Task timed out after {timeout_s:.2f} seconds\n")
            else:
                code = self.proc.wait(timeout=10) if self.proc else None
                self.stop()
                err = {"errorType": "Runtime.ExitError",
                       "errorMessage": f"RequestId: {request_id} Error: Runtime exited "
                                       f"with error: exit status {code}"}
            return self._finish(request_id, False, json.dumps(err).encode(), started)
        self._end_seen.wait(2.0)  # let the output pump catch up to this invocation's end
        return self._finish(request_id, bool(msg["ok"]), msg["payload"].encode(), started)

    def _finish(self, request_id: str, ok: bool, payload: bytes, started: float) -> Outcome:
        ms = (time.monotonic() - started) * 1000
        lines = self._current or []
        self._current = None
        lines.append(f"END RequestId: {request_id}\n")
        lines.append(f"REPORT RequestId: {request_id}\tDuration: {ms:.2f} ms\n")
        for line in lines[-2:]:
            self._log(line)
        return Outcome(ok=ok, payload=payload, logs="".join(lines))

    def _read_result(self, timeout_s: float) -> dict[str, object] | None:
        """Next message from the runtime; {"type": "exit"} when it exited; None on timeout."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._res_buf:
            left = deadline - time.monotonic()
            if self._res_fd is None or left <= 0:
                return None
            ready, _, _ = select.select([self._res_fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._res_fd, 65536)
            if not chunk:  # EOF: the runtime exited (it may not be reaped yet)
                return {"type": "exit"}
            self._res_buf += chunk
        line, self._res_buf = self._res_buf.split(b"\n", 1)
        return json.loads(line)

    # --- logs --------------------------------------------------------------
    def _pump_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            if line.startswith(END_MARKER):
                self._end_seen.set()
                continue
            if self._current is not None:
                self._current.append(line)
            self._log(line)

    def _log(self, line: str) -> None:
        self._lines.append(line)
        if self._log_sink:
            self._log_sink(line)
        if self.spec.log_file:
            try:
                with open(self.spec.log_file, "a", encoding="utf-8") as fh:
                    fh.write(line)
            except OSError:
                pass

    def recent_logs(self, n: int = 200) -> str:
        return "".join(list(self._lines)[-n:])


def refusing(function_name: str, path: str | None = None) -> str | None:
    """Why invocations of `function_name` are refused now (CTR_LAMBDA_REFUSE_FILE), else
    None. A missing or unreadable file refuses nothing."""
    path = path if path is not None else os.environ.get("CTR_LAMBDA_REFUSE_FILE")
    if not path:
        return None
    try:
        spec = json.loads(Path(path).read_text())
        until, names = float(spec["until"]), list(spec.get("functions") or [])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if time.time() >= until or (names and function_name not in names):
        return None
    return (f"injected fault: the Lambda endpoint refuses {function_name} for "
            f"{until - time.time():.1f}s more")


def default_python() -> str:
    """The interpreter for functions: CTR_LAMBDA_PYTHON (the project's venv), else ours."""
    return os.environ.get("CTR_LAMBDA_PYTHON") or sys.executable
