"""The Lambda runtime inside one execution environment (a local Python 3.13 process).

Started by `ProcessRuntimeExecutor` with the function's environment. Standard library
only: it runs under the project's interpreter, next to the function's own imports.

Protocol with the executor (newline-delimited JSON on two inherited pipe fds, so the
handler's own stdout/stderr stay free for logs):
  executor -> runtime (fd CTR_CMD_FD):    {"request_id", "payload", "arn", "timeout_s", "trace_id"}
  runtime -> executor (fd CTR_RESULT_FD): {"type": "ready"} once the handler module imported,
                                          {"type": "init_error", "error": {...}} if it did not,
                                          {"type": "result", "ok": bool, "payload": str} per invoke.
After each invocation the runtime prints `END_MARKER <request id>` to stdout, so the
executor knows the invocation's log lines are complete. Timeouts are enforced by the
executor (it kills this process), as the Lambda service does with a sandbox.

SnapStart (a published version with `SnapStart: ApplyOn: PublishedVersions`): started
with CTR_TEMPLATE_FD instead, this process is the version's snapshot template. It
imports the handler module, runs the before-snapshot hooks registered with
`snapshot_restore_py`, and then serves forks on that socket (AF_UNIX, SOCK_SEQPACKET):
  executor -> template: {"env": {...}, "watch_pid": int} with three fds passed along
                        (SCM_RIGHTS): the command pipe's read end, the result pipe's
                        write end, the output pipe's write end;
  template -> executor: {"type": "snapshot_ready", "init_s": float} once, or
                        {"type": "snapshot_error", "error": {...}} (then it exits);
                        {"pid": int} per fork.
Each fork is a new execution environment "restored from the snapshot": it takes the
environment's variables, runs the after-restore hooks, answers {"type": "ready"} and
then speaks exactly the protocol above. The template reaps its forks and writes
{"type": "exit", "code": int} on a fork's result pipe when it ends, so the executor
learns the exit status of a process that is not its child. In AWS the snapshot is the
microVM's memory and a restore maps it back; here it is the template's memory and
fork(), so what differs between copies is the same: whatever the hooks refresh.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, TextIO

END_MARKER = "\x00ctr-invocation-end"


class LambdaContext:
    """The attributes and method the AWS Python runtime gives handlers."""

    def __init__(self, request_id: str, arn: str, timeout_s: float) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def error_payload(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    """Lambda's error shape; Step Functions matches `errorType` in Retry/Catch."""
    return {
        "errorType": error_type or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def load_handler(spec: str) -> Any:
    """`app.lambda_handler` or `pkg/mod.fn` -> the callable (imports the module: init phase)."""
    module_name, _, func_name = spec.rpartition(".")
    if not module_name or not func_name:
        raise ValueError(f"Bad handler '{spec}': expected 'module.function'")
    module = importlib.import_module(module_name.replace("/", "."))
    try:
        return getattr(module, func_name)
    except AttributeError:
        raise AttributeError(
            f"Handler '{func_name}' missing on module '{module_name}'"
        ) from None


def _watch_parent(parent_pid: int) -> None:
    """Exit when the executor (LocalStack) is gone, even if it died without cleanup."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)
        time.sleep(1.0)


def _watch_pid(pid: int) -> None:
    """A restored copy's parent is the template, not the executor: watch the executor."""
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass
        time.sleep(1.0)


def _sender(out: TextIO) -> Callable[[dict[str, Any]], None]:
    def send(msg: dict[str, Any]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        out.write(json.dumps(msg) + "\n")
        out.flush()
    return send


def _enter_task_root() -> None:
    task_root = os.environ.get("CTR_CODE_DIR", "")
    if task_root:
        os.environ["LAMBDA_TASK_ROOT"] = task_root
        os.chdir(task_root)


def _init_error(exc: BaseException, kind: str | None = None) -> dict[str, Any]:
    if kind is None and isinstance(exc, ImportError):
        kind = "Runtime.ImportModuleError"
    print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
    traceback.print_exc()
    return error_payload(exc, kind)


def serve(handler: Any, cmd: Iterable[str], send: Callable[[dict[str, Any]], None]) -> None:
    """Answer invocations until the executor closes the command pipe (stop -> exit)."""
    for line in cmd:
        req = json.loads(line)
        os.environ["_X_AMZN_TRACE_ID"] = req.get("trace_id") or ""
        context = LambdaContext(req["request_id"], req["arn"], float(req["timeout_s"]))
        try:
            event = json.loads(req["payload"]) if req["payload"] else {}
            result = handler(event, context)
            msg = {"type": "result", "ok": True, "payload": json.dumps(result)}
        except Exception as exc:
            err = error_payload(exc)
            err["requestId"] = req["request_id"]
            print(f"[ERROR] {err['errorType']}: {err['errorMessage']}", file=sys.stderr)
            traceback.print_exc()
            msg = {"type": "result", "ok": False, "payload": json.dumps(err)}
        print(f"{END_MARKER} {req['request_id']}", flush=True)
        send(msg)


def main() -> None:
    cmd = os.fdopen(int(os.environ.pop("CTR_CMD_FD")), "r", encoding="utf-8")
    out = os.fdopen(int(os.environ.pop("CTR_RESULT_FD")), "w", encoding="utf-8")
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    send = _sender(out)
    _enter_task_root()
    try:
        handler = load_handler(os.environ["_HANDLER"])
    except Exception as exc:
        send({"type": "init_error", "error": _init_error(exc)})
        return
    send({"type": "ready"})
    serve(handler, cmd, send)


# --- SnapStart ---------------------------------------------------------------

LOCAL_HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "snapshot_restore_py_local.py")


def hooks_module() -> Any:
    """`snapshot_restore_py`: the installed one if any, else the executor's own copy of
    its API, registered under that name before the handler module imports it."""
    if "snapshot_restore_py" in sys.modules:
        return sys.modules["snapshot_restore_py"]
    if importlib.util.find_spec("snapshot_restore_py") is None:
        spec = importlib.util.spec_from_file_location("snapshot_restore_py", LOCAL_HOOKS)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["snapshot_restore_py"] = module
        spec.loader.exec_module(module)
    return importlib.import_module("snapshot_restore_py")


def run_before_snapshot(hooks: Any) -> None:
    callables = hooks.get_before_snapshot()
    while callables:  # reverse order of registration, as AWS's runtime runs them
        func, args, kwargs = callables.pop()
        func(*args, **kwargs)


def run_after_restore(hooks: Any) -> None:
    for func, args, kwargs in hooks.get_after_restore():
        func(*args, **kwargs)


def template_main() -> None:
    """Take the snapshot (import + before-snapshot hooks), then fork restored copies."""
    ctl = socket.socket(fileno=int(os.environ.pop("CTR_TEMPLATE_FD")))
    parent = os.getppid()
    started = time.monotonic()

    def tell(msg: dict[str, Any]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        ctl.send(json.dumps(msg).encode())

    _enter_task_root()
    try:
        hooks = hooks_module()
        load_handler(os.environ["_HANDLER"])
        run_before_snapshot(hooks)
        others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if others:
            # fork() copies only the calling thread: what these threads hold (locks,
            # half-done work) would be frozen in every copy.
            raise RuntimeError(f"threads alive at snapshot time: {', '.join(others)} "
                               "(start them after restore, or lazily)")
    except Exception as exc:
        tell({"type": "snapshot_error", "error": _init_error(exc)})
        return
    gc.collect()
    gc.freeze()  # copies share the snapshot's objects; the collector leaves them alone
    tell({"type": "snapshot_ready", "init_s": round(time.monotonic() - started, 3)})

    children: dict[int, int] = {}  # pid -> the template's copy of its result pipe

    def reap(signum: int = 0, frame: Any = None) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = children.pop(pid, None)
            if fd is None:
                continue
            try:
                code = os.waitstatus_to_exitcode(status)
                os.write(fd, (json.dumps({"type": "exit", "code": code}) + "\n").encode())
            except OSError:  # nobody reads it any more (the executor stopped it)
                pass
            os.close(fd)

    signal.signal(signal.SIGCHLD, reap)
    while True:
        if os.getppid() != parent:
            os._exit(0)
        try:
            ready, _, _ = select.select([ctl], [], [], 1.0)
            if not ready:
                continue
            data, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 3)
        except InterruptedError:
            continue
        if not data:  # the executor closed the socket: the version is gone
            os._exit(0)
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            ctl.send(json.dumps({"error": f"expected 3 fds, got {len(fds)}"}).encode())
            continue
        req = json.loads(data)
        cmd_fd, res_fd, out_fd = fds
        # No SIGCHLD between fork() and noting the pid: its exit would be unreported.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                restored(ctl, hooks, req, cmd_fd, res_fd, out_fd, children)
                atexit._run_exitfuncs()  # as an interpreter that ends normally does
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = res_fd
        os.close(cmd_fd)
        os.close(out_fd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        ctl.send(json.dumps({"pid": pid}).encode())


def restored(ctl: socket.socket, hooks: Any, req: dict[str, Any],
             cmd_fd: int, res_fd: int, out_fd: int, siblings: dict[int, int]) -> None:
    """One execution environment restored from the snapshot (a fork of the template)."""
    os.setsid()  # its own process group, as a cold-started environment has
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    ctl.close()
    for fd in siblings.values():  # other environments' result pipes are not ours
        os.close(fd)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    os.environ.clear()
    os.environ.update(req["env"])
    _enter_task_root()
    threading.Thread(target=_watch_pid, args=(int(req["watch_pid"]),), daemon=True).start()
    cmd = os.fdopen(cmd_fd, "r", encoding="utf-8")
    send = _sender(os.fdopen(res_fd, "w", encoding="utf-8"))
    try:
        run_after_restore(hooks)
    except Exception as exc:
        send({"type": "init_error", "error": _init_error(exc, "Runtime.AfterRestoreError")})
        return
    try:  # the version's handler: imported in the snapshot, so only looked up here
        handler = load_handler(os.environ.get("_HANDLER") or "")
    except Exception as exc:
        send({"type": "init_error", "error": _init_error(exc)})
        return
    send({"type": "ready"})
    serve(handler, cmd, send)


if __name__ == "__main__":
    if "CTR_TEMPLATE_FD" in os.environ:
        template_main()
    else:
        main()
