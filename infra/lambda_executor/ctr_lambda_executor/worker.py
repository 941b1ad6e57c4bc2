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
- code given as a local directory (hot reload) is re-imported when a file changes;
- SnapStart: an environment of a version with a `SnapshotTemplate` is a fork of the
  template (imports done, before-snapshot hooks run) instead of a fresh interpreter;
  if the template cannot serve it, the environment cold-starts as any other.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

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


def runtime_env(spec: WorkerSpec) -> dict[str, str]:
    """The environment of the function's process (without the executor's pipe fds)."""
    env = {k: os.environ[k] for k in HOST_ENV_KEEP if k in os.environ}
    env.update(spec.env)
    env.update({
        "_HANDLER": spec.handler,
        "PYTHONPATH": os.pathsep.join(python_path_for(spec.code_dir, spec.layer_dirs)),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "CTR_CODE_DIR": str(spec.code_dir),
    })
    return env


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


class _LogLines:
    """Output lines of a process: kept (the newest `_lines.maxlen`), passed to the sink,
    appended to the spec's log file."""

    spec: WorkerSpec
    _lines: deque[str]
    _log_sink: Callable[[str], None] | None

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


class SnapshotUnavailable(RuntimeError):
    """The version's snapshot template cannot give an environment (it failed, exited,
    or its sources changed): the caller cold-starts instead."""


class SnapshotTemplate(_LogLines):
    """The local stand-in for a SnapStart snapshot: one process per published version
    that imported the handler module and ran the before-snapshot hooks, then forks a
    copy per new execution environment (bootstrap.template_main)."""

    def __init__(self, spec: WorkerSpec, label: str = "",
                 log_sink: Callable[[str], None] | None = None,
                 omp_threads: str | None = "1") -> None:
        self.spec = spec
        self.label = label or spec.function_name
        # GNU OpenMP is not fork-safe: once a process ran a parallel region with more
        # than one thread, a fork's next such region waits forever for the parent's pool
        # threads. XGBoost starts one even to load a model with nthread=1, so the
        # template's OpenMP runtime is initialised with one thread; copies inherit that
        # default (calls with an explicit nthread > 1 still get fresh threads).
        self.omp_threads = omp_threads
        self.proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self._lock = threading.Lock()
        self._lines: deque[str] = deque(maxlen=2000)
        self._log_sink = log_sink
        self._started_mtime = 0.0
        self.init_s: float | None = None
        self.forks = 0

    def start(self, timeout_s: float = 120.0) -> None:
        """Take the snapshot; SnapshotUnavailable (with the template's output) if not."""
        spec = self.spec
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = runtime_env(spec)
        env["CTR_TEMPLATE_FD"] = str(theirs.fileno())
        if self.omp_threads:
            env["OMP_NUM_THREADS"] = self.omp_threads
        if spec.hot_reload:
            self._started_mtime = source_mtime([spec.code_dir, *spec.layer_dirs])
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [spec.python, "-s", str(BOOTSTRAP)],
            env=env, cwd=str(spec.code_dir), pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        theirs.close()
        self._ctl = ours
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump_output, args=(self.proc.stdout,),
                         daemon=True).start()
        msg = self._receive(timeout_s)
        if msg is None or msg.get("type") != "snapshot_ready":
            self.stop()
            why = (f"no snapshot within {timeout_s:.0f}s" if msg is None
                   else json.dumps(msg.get("error") or msg)[:2000])
            raise SnapshotUnavailable(f"{self.label}: snapshot failed: {why}\n"
                                      f"{self.recent_logs(40)}")
        self.init_s = float(msg.get("init_s") or 0.0)
        self._log(f"[snapstart] {self.label}: snapshot taken in "
                  f"{time.monotonic() - started:.2f}s (init {self.init_s:.2f}s)\n")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stale(self) -> bool:
        if not self.spec.hot_reload:
            return False
        return source_mtime([self.spec.code_dir, *self.spec.layer_dirs]) > self._started_mtime

    def spawn(self, env: dict[str, str], fds: tuple[int, int, int],
              timeout_s: float = 30.0) -> int:
        """Fork one restored environment with `env` and (command read end, result write
        end, output write end); its pid."""
        with self._lock:
            if not self.alive() or self._ctl is None:
                raise SnapshotUnavailable(f"{self.label}: the snapshot template is not "
                                          "running")
            if self.stale():
                raise SnapshotUnavailable(f"{self.label}: sources changed since the "
                                          "snapshot")
            request = json.dumps({"env": env, "watch_pid": os.getpid()}).encode()
            try:
                socket.send_fds(self._ctl, [request], list(fds))
                answer = self._receive(timeout_s)
            except OSError as err:
                answer = {"error": f"{type(err).__name__}: {err}"}
            if answer is None or "pid" not in answer:
                raise SnapshotUnavailable(f"{self.label}: fork failed: "
                                          f"{(answer or {}).get('error', 'no answer')}")
            self.forks += 1
            return int(answer["pid"])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        ctl, self._ctl = self._ctl, None
        if ctl is not None:
            ctl.close()
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def _receive(self, timeout_s: float) -> dict[str, Any] | None:
        if self._ctl is None:
            return None
        ready, _, _ = select.select([self._ctl], [], [], timeout_s)
        if not ready:
            return None
        data = self._ctl.recv(1 << 20)
        return json.loads(data) if data else {"type": "exit"}

    def _pump_output(self, stream: BinaryIO) -> None:
        for raw in iter(stream.readline, b""):
            self._log(raw.decode("utf-8", "replace"))



class Worker(_LogLines):
    def __init__(self, spec: WorkerSpec, log_sink: Callable[[str], None] | None = None,
                 template: SnapshotTemplate | None = None) -> None:
        self.spec = spec
        self.template = template
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None          # a restored environment (not our child)
        self._cmd: TextIO | None = None
        self._res_fd: int | None = None
        self._res_buf = b""
        self._lines: deque[str] = deque(maxlen=20000)   # recent output, for get_logs()
        self._current: list[str] | None = None          # output of the running invocation
        self._end_seen = threading.Event()
        self._lock = threading.Lock()
        self._init_error: dict[str, Any] | None = None
        self._started_mtime = 0.0
        self._log_sink = log_sink
        self._exit: dict[str, Any] | None = None     # a restored environment's end
        self.cold_starts = 0   # new execution environments (restored ones included)
        self.restores = 0      # of which forks of the snapshot template
        self.fallback: str | None = None   # why the last start was not a restore

    # --- lifecycle ---------------------------------------------------------
    def start(self, startup_timeout: float = 60.0) -> None:
        if self.template is not None:
            try:
                self._start_restored(startup_timeout)
                return
            except SnapshotUnavailable as err:
                self.fallback = str(err)
                self._log(f"[snapstart] {err}; this environment starts cold\n")
        self._start_process(startup_timeout)

    def _start_process(self, startup_timeout: float) -> None:
        spec = self.spec
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        env = runtime_env(spec)
        env.update({"CTR_CMD_FD": str(cmd_r), "CTR_RESULT_FD": str(res_w)})
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
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump_output, args=(self.proc.stdout,),
                         daemon=True).start()
        self._await_ready(startup_timeout)

    def _start_restored(self, startup_timeout: float) -> None:
        assert self.template is not None
        spec = self.spec
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe()
        env = runtime_env(spec)
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"  # as AWS sets it on a restore
        try:
            pid = self.template.spawn(env, (cmd_r, res_w, out_w))
        except SnapshotUnavailable:
            for fd in (cmd_r, cmd_w, res_r, res_w, out_r, out_w):
                os.close(fd)
            raise
        for fd in (cmd_r, res_w, out_w):
            os.close(fd)
        if spec.hot_reload:
            self._started_mtime = self.template._started_mtime
        self.pid, self.proc, self._exit = pid, None, None
        self._cmd = os.fdopen(cmd_w, "w", encoding="utf-8")
        self._res_fd, self._res_buf = res_r, b""
        self.cold_starts += 1
        self.restores += 1
        self.fallback = None
        threading.Thread(target=self._pump_output, args=(os.fdopen(out_r, "rb"),),
                         daemon=True).start()
        self._await_ready(startup_timeout)

    def _await_ready(self, startup_timeout: float) -> None:
        first = self._read_result(startup_timeout)
        if first is None or first.get("type") == "exit":
            self.stop()
            raise RuntimeError(f"{self.spec.function_name}: runtime did not start within "
                               f"{startup_timeout:.0f}s:\n{self.recent_logs()}")
        self._init_error = first.get("error") if first.get("type") == "init_error" else None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pid is None or self._res_fd is None:
            return False
        return not self._ended_between_invocations()

    def _ended_between_invocations(self) -> bool:
        """A restored environment is not our child: it ended if its result pipe says so
        (the template's exit report, or EOF). Nothing else arrives between invocations."""
        if self._exit is not None:
            return True
        assert self._res_fd is not None
        ready, _, _ = select.select([self._res_fd], [], [], 0)
        if ready:
            chunk = os.read(self._res_fd, 65536)
            if not chunk:
                self._exit = {"type": "exit"}
                return True
            self._res_buf += chunk
        if b"\n" in self._res_buf:
            msg = self._read_result(0)
            if msg is not None and msg.get("type") == "exit":
                self._exit = msg
                return True
        return False

    def stale(self) -> bool:
        """True if hot-reloaded sources changed since this process started."""
        if not self.spec.hot_reload:
            return False
        dirs = [self.spec.code_dir, *self.spec.layer_dirs]
        return source_mtime(dirs) > self._started_mtime

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        pid, self.pid = self.pid, None
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
        if pid is not None:  # the template reaps it
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, signal.SIGKILL)

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
        except BrokenPipeError:  # the runtime died between invocations: its end report
            msg = self._read_result(10.0) or {"type": "exit"}
        if msg is None or msg.get("type") == "exit":
            if msg is None:  # still running: time out, as Lambda does
                self.stop()
                err = {"errorType": "Sandbox.Timedout",
                       "errorMessage": f"{datetime.now(UTC).isoformat()} {request_id} "
                                       f"Task timed out after {timeout_s:.2f} seconds"}
                self._log(f"{datetime.now(UTC).isoformat()} {request_id} "
                          f"Task timed out after {timeout_s:.2f} seconds\n")
            else:
                code = (msg.get("code") if self.proc is None
                        else self.proc.wait(timeout=10))
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

    def _read_result(self, timeout_s: float) -> dict[str, Any] | None:
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
    def _pump_output(self, stream: BinaryIO) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            if line.startswith(END_MARKER):
                self._end_seen.set()
                continue
            if self._current is not None:
                self._current.append(line)
            self._log(line)



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
