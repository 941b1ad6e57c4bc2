#!/usr/bin/env bash
# Create/refresh the project's virtualenvs from the lock files. Idempotent: a venv is
# rebuilt only when its lock file changed (a stamp holds the lock's hash).
#   .local/venvs/dev         the project + dev/test tools (requirements/dev.lock)
#   .local/venvs/localstack  LocalStack host mode (requirements/localstack.lock) + the
#                            process Lambda executor plugin (infra/lambda_executor)
#   .local/venvs/checkov     the IaC security scanner (requirements/checkov.lock); its own
#                            venv because its pins (old boto3, packaging 23) clash with dev
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venvs="$root/.local/venvs"
mkdir -p "$venvs"

find_python313() {
  # 1) CTR_PYTHON if set; 2) a python3.13 on PATH that really runs (a pyenv shim may not);
  # 3) pyenv's 3.13.x. Never a hard-coded path.
  local cand
  if [[ -n "${CTR_PYTHON:-}" ]]; then
    "$CTR_PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null \
      && { echo "$CTR_PYTHON"; return 0; }
    echo "error: CTR_PYTHON=$CTR_PYTHON is not a working Python 3.13" >&2; return 1
  fi
  if cand=$(command -v python3.13 2>/dev/null) && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
    echo "$cand"; return 0
  fi
  if command -v pyenv >/dev/null 2>&1; then
    local v
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.13(\.[0-9]+)?$' | sort -t. -k3 -n -r); do
      if cand=$(PYENV_VERSION="$v" pyenv which python3.13 2>/dev/null) && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
        echo "$cand"; return 0
      fi
    done
  fi
  cat >&2 <<MSG
error: Python 3.13 not found.
  ctr-pipeline (and LocalStack host mode) need CPython 3.13. Looked for: \$CTR_PYTHON,
  a working 'python3.13' on PATH, and pyenv versions 3.13.x.
  Install one (e.g. 'pyenv install 3.13') or point CTR_PYTHON at a python3.13 binary.
MSG
  return 1
}

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

stale() {  # stampfile hash: true when the stamp is missing or holds another hash
  [[ ! -f "$1" || "$(cat "$1")" != "$2" ]]
}

quiet_pip() {  # pip ... with its harmless notices about ignored lock entries dropped
  "$@" 2> >(grep -v -E "is ignored: it is neither|BuildBackendWarning|^\s" >&2)
}

install_lock() {  # name lockfile hash [what]: (re)create a venv from its lock when the
  # lock changed; true when it did. Exits on a failed install (errexit does not apply
  # inside an `if` condition, and a stamp must never mark a broken venv as done).
  local name=$1 lock=$2 lock_hash=$3
  ensure_venv "$name" "$lock_hash" || return 1
  echo "==> creating .local/venvs/$name${4:+ ($4)}"
  quiet_pip "$venvs/$name/bin/pip" install -q -r "$lock" \
    || { echo "error: installing $lock into .local/venvs/$name failed" >&2; exit 1; }
  echo "$lock_hash" > "$venvs/$name/.stamp"
}

ensure_venv() {  # name lockfile... -- install commands run by caller
  local name=$1 stamp_hash=$2 dir="$venvs/$1"
  if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp_hash" && -x "$dir/bin/python" ]]; then
    return 1  # up to date
  fi
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  return 0
}

PY=$(find_python313)
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Dev venv: full lock in one resolver pass (rebuilt only when the lock changes), then
# the project itself, editable, without deps (reinstalled when pyproject.toml changes).
dev_hash=$(hash_of "$root/requirements/dev.lock")
if install_lock dev "$root/requirements/dev.lock" "$dev_hash" \
     "Python $("$PY" -c 'import platform; print(platform.python_version())')"; then
  rm -f "$venvs/dev/.project-stamp"
fi
proj_hash=$(hash_of "$root/pyproject.toml")
if stale "$venvs/dev/.project-stamp" "$proj_hash"; then
  quiet_pip "$venvs/dev/bin/pip" install -q --no-deps --no-build-isolation -e "$root" >/dev/null
  echo "$proj_hash" > "$venvs/dev/.project-stamp"
fi

# LocalStack venv: the known-good freeze in ONE resolver pass (see docs/design.md, "LocalStack in host mode").
ls_hash=$(hash_of "$root/requirements/localstack.lock")
if install_lock localstack "$root/requirements/localstack.lock" "$ls_hash" \
     "localstack-core host mode"; then
  rm -f "$venvs/localstack/.executor-stamp"
fi
# ...plus our executor plugin, without touching the resolved set. A regular (not
# editable) install: plux's setuptools hook breaks editable builds. It is reinstalled
# whenever its sources change.
ex_hash=$(hash_of "$root"/infra/lambda_executor/pyproject.toml "$root"/infra/lambda_executor/ctr_lambda_executor/*.py)
if stale "$venvs/localstack/.executor-stamp" "$ex_hash"; then
  quiet_pip "$venvs/localstack/bin/pip" install -q --no-deps --no-build-isolation --force-reinstall "$root/infra/lambda_executor"
  rm -rf "$root/infra/lambda_executor/build" "$root"/infra/lambda_executor/*.egg-info
  echo "$ex_hash" > "$venvs/localstack/.executor-stamp"
fi

# Checkov venv: its freeze in ONE resolver pass, like the others (used by `make security`
# and tests/unit/test_security.py).
ck_hash=$(hash_of "$root/requirements/checkov.lock")
install_lock checkov "$root/requirements/checkov.lock" "$ck_hash" "IaC security scanner" || true
