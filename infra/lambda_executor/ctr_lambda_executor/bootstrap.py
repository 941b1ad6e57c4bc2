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
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

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


def main() -> None:
    cmd = os.fdopen(int(os.environ.pop("CTR_CMD_FD")), "r", encoding="utf-8")
    out = os.fdopen(int(os.environ.pop("CTR_RESULT_FD")), "w", encoding="utf-8")
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    def send(msg: dict[str, Any]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        out.write(json.dumps(msg) + "\n")
        out.flush()

    task_root = os.environ.get("CTR_CODE_DIR", "")
    if task_root:
        os.environ["LAMBDA_TASK_ROOT"] = task_root
        os.chdir(task_root)
    try:
        handler = load_handler(os.environ["_HANDLER"])
    except Exception as exc:
        kind = "Runtime.ImportModuleError" if isinstance(exc, ImportError) else None
        print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        send({"type": "init_error", "error": error_payload(exc, kind)})
        return
    send({"type": "ready"})

    for line in cmd:  # EOF: the executor closed the pipe (stop) -> exit
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


if __name__ == "__main__":
    main()
