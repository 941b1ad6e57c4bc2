"""The embedded local cloud: LocalStack in host mode (no Docker) with the process Lambda
executor, and an MLflow tracking server whose artifacts live in the emulator's S3.

Every process we start is recorded in a PID file under the state directory and is the
leader of its own process group, so `stop()` ends exactly what `start()` started (and
the Lambda worker processes below it). Nothing listens on anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctr.errors import ConfigError, DomainError
from ctr_infra import net
from ctr_infra.net import LOCALHOST

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


class CloudError(DomainError):
    """The local cloud could not be started/used; the message says what to do."""


def repo_root() -> Path:
    if not (REPO_ROOT / "template.yaml").exists():
        raise ConfigError(f"ctr_infra is not running from a ctr-pipeline checkout ({REPO_ROOT})")
    return REPO_ROOT


@dataclass
class CloudConfig:
    """Where the local cloud keeps its state and which ports it uses.

    `make up` uses the defaults (state in .local/, LocalStack on 4566, MLflow on 5000,
    each overridable by environment); tests use a temp state dir and free ports."""

    state_dir: Path = field(default_factory=lambda: Path(
        os.environ.get("CTR_STATE_DIR", str(REPO_ROOT / ".local" / "state"))))
    localstack_port: int = field(default_factory=lambda: int(
        os.environ.get("CTR_LOCALSTACK_PORT", "4566")))
    mlflow_port: int = field(default_factory=lambda: int(
        os.environ.get("CTR_MLFLOW_PORT", "5000")))
    stack_name: str = field(default_factory=lambda: os.environ.get("CTR_STACK_NAME",
                                                                    "ctr-pipeline"))
    venvs_dir: Path = field(default_factory=lambda: Path(
        os.environ.get("CTR_VENVS_DIR", str(REPO_ROOT / ".local" / "venvs"))))

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOCALHOST}:{self.localstack_port}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{LOCALHOST}:{self.mlflow_port}"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.state_dir / "pids"

    def venv_bin(self, venv: str, exe: str) -> Path:
        return self.venvs_dir / venv / "bin" / exe

    @classmethod
    def on_free_ports(cls, state_dir: Path, stack_name: str) -> CloudConfig:
        """A cloud of its own (tests, bench): `state_dir`, free loopback ports."""
        return cls(state_dir=state_dir, localstack_port=net.free_port(),
                   mlflow_port=net.free_port(), stack_name=stack_name)


def aws_env(cfg: CloudConfig) -> dict[str, str]:
    """Environment for AWS clients talking to the emulator. The keys are the emulator's
    fixed test values (LocalStack accepts any); never real credentials."""
    return {
        "AWS_ENDPOINT_URL": cfg.endpoint_url,
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", REGION),
        "AWS_ACCESS_KEY_ID": os.environ.get("CTR_LOCAL_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("CTR_LOCAL_SECRET_ACCESS_KEY", "test"),
    }


@contextlib.contextmanager
def aws_env_applied(cfg: CloudConfig) -> Iterator[None]:
    """`aws_env(cfg)` in os.environ for the duration; the previous values afterwards."""
    with env_applied(aws_env(cfg)):
        yield


@contextlib.contextmanager
def env_applied(env: dict[str, str]) -> Iterator[None]:
    """`env` in os.environ for the duration; the previous values (or absence) afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def boto3_client(cfg: CloudConfig, service: str) -> Any:
    import boto3
    from botocore.config import Config

    env = aws_env(cfg)
    return boto3.client(
        service, endpoint_url=cfg.endpoint_url, region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 5, "mode": "standard"},
                      read_timeout=960, connect_timeout=10, s3={"addressing_style": "path"}),
    )


# --- processes -----------------------------------------------------------------

def _pid_file(cfg: CloudConfig, name: str) -> Path:
    return cfg.pids_dir / f"{name}.pid"


def running_pid(cfg: CloudConfig, name: str) -> int | None:
    """PID of our process `name` if its PID file names a live process, else None."""
    path = _pid_file(cfg, name)
    try:
        pid = int(path.read_text().split()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError, IndexError):
        return None
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists() and stat.read_text().split()[2] == "Z":
        return None
    return pid


def _spawn(cfg: CloudConfig, name: str, argv: list[str], env: dict[str, str]) -> int:
    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    cfg.pids_dir.mkdir(parents=True, exist_ok=True)
    log = open(cfg.logs_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            cwd=str(cfg.state_dir))
    log.close()
    _pid_file(cfg, name).write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_ready(url: str, timeout_s: float, pid: int, name: str, cfg: CloudConfig) -> None:
    try:
        net.wait_http(url, timeout_s, alive=lambda: _alive(pid), what=name)
    except net.NotReady:
        tail = _tail(cfg.logs_dir / f"{name}.log")
        raise CloudError(f"{name} did not become ready at {url} within {timeout_s:.0f}s. "
                         f"Last lines of {cfg.logs_dir / (name + '.log')}:\n{tail}") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def _check_port(port: int, what: str, env_var: str) -> None:
    if net.port_in_use(port):
        raise CloudError(f"port {port} on {LOCALHOST} is already in use by another process, "
                         f"so {what} cannot start there. Stop that process or choose another "
                         f"port with {env_var}=<port>.")


def _require_venv(cfg: CloudConfig, venv: str, exe: str) -> Path:
    path = cfg.venv_bin(venv, exe)
    if not path.exists():
        raise CloudError(f"{path} is missing: run `make venv` (infra/bootstrap.sh) first")
    return path


def _start(cfg: CloudConfig, name: str, health_url: str, timeout_s: float,
           port: tuple[int, str, str], launch: Callable[[], tuple[list[str], dict[str, str]]]
           ) -> int:
    """Start process `name` unless ours already runs (its PID file), then wait until
    `health_url` answers 200. `port` is (port, what, env var) for a clear error when
    something else holds the port; `launch` gives the argv and environment."""
    pid = running_pid(cfg, name)
    if not pid:
        _check_port(*port)
        argv, env = launch()
        pid = _spawn(cfg, name, argv, env)
    _wait_ready(health_url, timeout_s, pid, name, cfg)
    return pid


def lambda_refuse_file(cfg: CloudConfig) -> Path:
    """The process executor's test-only fault switch (ctr_lambda_executor.executor)."""
    return cfg.state_dir / "faults" / "lambda-refuse.json"


def start_localstack(cfg: CloudConfig, timeout_s: float = 120) -> int:
    """Start LocalStack (host mode) unless ours already runs; return its PID."""
    def launch() -> tuple[list[str], dict[str, str]]:
        python = _require_venv(cfg, "localstack", "python")
        volume = cfg.state_dir / "localstack"
        volume.mkdir(parents=True, exist_ok=True)
        tmp = cfg.state_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "LOCALSTACK_"))}
        env.update({
            "GATEWAY_LISTEN": f"{LOCALHOST}:{cfg.localstack_port}",
            "LOCALSTACK_VOLUME_DIR": str(volume),
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",
            "LAMBDA_RUNTIME_EXECUTOR": "process",
            "CTR_LAMBDA_PYTHON": str(_require_venv(cfg, "dev", "python")),
            "CTR_LAMBDA_LOG_DIR": str(cfg.logs_dir / "lambda"),
            "LAMBDA_KEEPALIVE_MS": os.environ.get("LAMBDA_KEEPALIVE_MS", "600000"),
            # A cold start imports the handler (train: MLflow + XGBoost, 12-25 s on a loaded
            # 2-core machine); LocalStack's 20 s default failed it as Lambda.ServiceException.
            # 60 s = the process executor's own startup wait (worker.Worker.start).
            "LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT": os.environ.get(
                "LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT", "60"),
            # DNS server off: nothing here needs LocalStack's resolver; it would bind :53.
            "DNS_ADDRESS": "0",
            # LocalStack believes it runs in a container here and keeps service state
            # (CloudWatch's metrics database) in $TMPDIR/localstack, which every instance
            # deletes when it stops: one per cloud, or concurrent clouds break each other.
            "TMPDIR": str(tmp),
            # The emulator's own calls (Step Functions -> STS AssumeRole -> Lambda Invoke)
            # go straight into its gateway instead of over a pooled HTTP connection: its
            # task client makes one attempt only, and a keep-alive connection closed by
            # the gateway's 60 s idle timeout as it is reused failed a task as
            # States.Runtime ("Connection was closed before we received a valid
            # response"; docs/design.md, "A lost Lambda connection").
            "IN_MEMORY_CLIENT": os.environ.get("CTR_IN_MEMORY_CLIENT", "1"),
            # Test-only: while this file names a deadline, the process executor refuses
            # invocations of the functions it lists (the soak's "endpoint refusing").
            "CTR_LAMBDA_REFUSE_FILE": str(lambda_refuse_file(cfg)),
        })
        return [str(python), "-m", "localstack.runtime.main"], env

    return _start(cfg, "localstack", f"{cfg.endpoint_url}/_localstack/health", timeout_s,
                  (cfg.localstack_port, "LocalStack", "CTR_LOCALSTACK_PORT"), launch)


def start_mlflow(cfg: CloudConfig, bucket: str, timeout_s: float = 120) -> int:
    """Start the MLflow tracking server (SQLite file by default, artifacts in S3)."""
    def launch() -> tuple[list[str], dict[str, str]]:
        mlflow = _require_venv(cfg, "dev", "mlflow")
        db_dir = cfg.state_dir / "mlflow"
        db_dir.mkdir(parents=True, exist_ok=True)
        backend = os.environ.get("CTR_MLFLOW_BACKEND_URI", f"sqlite:///{db_dir / 'mlflow.db'}")
        env = {
            # MLflow 3's job runner (a huey consumer per worker slot, each importing
            # mlflow: ~1.4 GB and seconds of CPU at every start) serves GenAI jobs this
            # project never submits; off unless the environment turns it on.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            **os.environ, **aws_env(cfg), "MLFLOW_S3_ENDPOINT_URL": cfg.endpoint_url}
        argv = [str(mlflow), "server", "--host", LOCALHOST, "--port", str(cfg.mlflow_port),
                # One worker: with more, uvicorn's supervisor kills workers that miss its
                # health check while they import (35-50 s on a loaded 2-core machine), in
                # a loop; one worker is plenty for one pipeline and a CLI.
                "--workers", os.environ.get("CTR_MLFLOW_WORKERS", "1"),
                "--backend-store-uri", backend,
                "--artifacts-destination", f"s3://{bucket}/mlflow-artifacts"]
        return argv, env

    return _start(cfg, "mlflow", f"{cfg.mlflow_uri}/health", timeout_s,
                  (cfg.mlflow_port, "the MLflow server", "CTR_MLFLOW_PORT"), launch)


def stop(cfg: CloudConfig, names: tuple[str, ...] = ("mlflow", "localstack")) -> list[str]:
    """Stop our processes (whole process groups) by PID file; return what was stopped."""
    stopped = []
    for name in names:
        pid = running_pid(cfg, name)
        if pid:
            _kill_group(pid)
            stopped.append(f"{name} (pid {pid})")
        _pid_file(cfg, name).unlink(missing_ok=True)
    return stopped


def _kill_group(pid: int, grace_s: float = 15) -> None:
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def api_url(cfg: CloudConfig, api_id: str, stage: str) -> str:
    """LocalStack's URL for a REST API stage (path-style, works without DNS)."""
    return f"{cfg.endpoint_url}/restapis/{api_id}/{stage}/_user_request_"


def write_outputs(cfg: CloudConfig, outputs: dict[str, str]) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    (cfg.state_dir / "outputs.json").write_text(json.dumps(outputs, indent=2) + "\n")


def read_outputs(cfg: CloudConfig) -> dict[str, str]:
    try:
        return dict(json.loads((cfg.state_dir / "outputs.json").read_text()))
    except FileNotFoundError:
        return {}


# --- a deployed stack ---------------------------------------------------------------

# The bucket prefixes the pipeline writes (everything but MLflow's artifacts).
DATA_PREFIXES = ("raw/", "chunks/", "parquet/", "rejects/", "serving/", "state/", "audit/",
                 "monitoring/", "predictions/")


def publish_to_aliases(lam: Any, name: str, deadline: float, every_s: float = 0.2) -> str | None:
    """A function behind aliases (AutoPublishAlias) runs a published, immutable version:
    publish $LATEST's configuration, wait until the version is Active (with SnapStart,
    after its snapshot) and move every alias to it, as a deploy of the changed template
    does. The new version, or None when the function has no alias."""
    aliases = lam.list_aliases(FunctionName=name).get("Aliases", [])
    if not aliases:
        return None
    version = str(lam.publish_version(FunctionName=name)["Version"])
    while lam.get_function_configuration(FunctionName=name, Qualifier=version).get(
            "State") != "Active":
        if time.monotonic() > deadline:
            raise CloudError(f"{name}: version {version} not active in time")
        time.sleep(every_s)
    for alias in aliases:
        lam.update_alias(FunctionName=name, Name=alias["Name"], FunctionVersion=version)
    return version


@dataclass
class Stack:
    """The stack deployed on a local cloud: its config, its outputs, and one boto3 client
    per service (made on first use)."""

    cfg: CloudConfig
    outputs: dict[str, str]
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3_client(self.cfg, service)
        return self._clients[service]

    @property
    def bucket(self) -> str:
        return self.outputs["BucketName"]

    @property
    def store(self) -> Any:
        from ctr.storage import Store

        return Store(self.client("s3"), self.bucket)

    def function_name(self, logical: str) -> str:
        """`ChunkFunction` -> the deployed function's physical name."""
        return self.outputs[f"{logical}Name"]

    def short_function_names(self) -> dict[str, str]:
        """Deployed function name -> short name (`Chunk` for ChunkFunction)."""
        return {v: k.removesuffix("FunctionName") for k, v in self.outputs.items()
                if k.endswith("FunctionName")}

    def empty_data(self) -> int:
        """Delete every object under the data prefixes (DATA_PREFIXES), 1,000 keys per
        request; returns how many."""
        s3, deleted = self.client("s3"), 0
        for prefix in DATA_PREFIXES:
            keys = list(self.store.list_keys(prefix))
            for i in range(0, len(keys), 1000):
                s3.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
            deleted += len(keys)
        return deleted

    def function_env(self, logical: str) -> dict[str, str]:
        conf = self.client("lambda").get_function_configuration(
            FunctionName=self.function_name(logical))
        return dict(conf.get("Environment", {}).get("Variables", {}))

    def set_function_env(self, logical: str, variables: dict[str, str],
                         timeout_s: float = 60, every_s: float = 0.2) -> None:
        """Replace a deployed function's environment and wait until the update is live
        (LocalStack then starts new execution environments)."""
        lam = self.client("lambda")
        name = self.function_name(logical)
        lam.update_function_configuration(FunctionName=name,
                                          Environment={"Variables": variables})
        deadline = time.monotonic() + timeout_s
        while lam.get_function_configuration(FunctionName=name).get(
                "LastUpdateStatus") != "Successful":
            if time.monotonic() > deadline:
                raise CloudError(f"{name}: configuration update not live after "
                                 f"{timeout_s:.0f}s")
            time.sleep(every_s)
        # A function behind an alias (AutoPublishAlias: predict's `live`, which the API
        # invokes) runs a published, immutable version: publish the new configuration and
        # move the alias to it, as a deploy of the changed template does.
        publish_to_aliases(lam, name, deadline, every_s)
