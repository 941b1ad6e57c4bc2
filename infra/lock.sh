#!/usr/bin/env bash
# Re-resolve the dev environment from pyproject.toml's dependencies in a scratch venv
# and write requirements/dev.lock. Review the diff before committing it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source <(sed -n '/^find_python313()/,/^}/p' "$root/infra/bootstrap.sh")
PY=$(find_python313)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/v"
"$tmp/v/bin/pip" install -q "$root[dev]"
{ echo "# Full lock of the dev/test environment (Python 3.13). Regenerate: make lock";
  "$tmp/v/bin/pip" freeze --all | grep -v -E "^(ctr-pipeline|pip==)"; } > "$root/requirements/dev.lock"
echo "wrote requirements/dev.lock ($(wc -l < "$root/requirements/dev.lock") lines)"
