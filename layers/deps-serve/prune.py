"""Remove from an installed layer directory every file that prune.txt's globs leave out
(the same rule as `ctr_infra.sizes.pruned`). Usage: python prune.py LAYER_DIR PRUNE_TXT"""

from __future__ import annotations

import glob
import re
import sys
from pathlib import Path


def patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _regex(rule: str) -> re.Pattern[str]:
    """A glob where `*` stays within one path segment and `**` spans segments."""
    return re.compile(glob.translate(rule, recursive=True, include_hidden=True, seps="/"))


def is_pruned(rel: str, rules: list[str]) -> bool:
    """Whether the file at `rel` (POSIX, relative to the layer's python/) is left out:
    the last rule that matches it or one of its parent directories decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    pruned = False
    for rule in rules:
        keep = rule.startswith("!")
        pattern = _regex(rule.removeprefix("!"))
        if any(pattern.match(c) for c in candidates):
            pruned = not keep
    return pruned


def main(layer_dir: str, prune_txt: str) -> int:
    root = Path(layer_dir)
    rules = patterns(Path(prune_txt).read_text())
    removed = 0
    for path in sorted(root.rglob("*")):
        if (path.is_file() or path.is_symlink()) and is_pruned(
                path.relative_to(root).as_posix(), rules):
            removed += path.stat().st_size if path.exists() else 0
            path.unlink()
    print(f"pruned {removed / 1e6:.1f} MB from {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
