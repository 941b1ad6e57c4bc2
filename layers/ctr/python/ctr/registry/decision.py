"""The promotion gate's decision as a pure function: numbers in, verdict out.

No MLflow, no I/O: `ctr.registry.gate` measures the numbers (both models scored on the
same holdout rows) and `ctr.registry.promotion.apply_decision` carries the verdict out
(tags, alias moves). Keeping the rule here makes it testable on its own and readable
in one screen.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Evidence:
    """What the gate measured for one candidate."""

    version: int                          # the candidate
    candidate_logloss: float              # on the holdout rows
    rows: int                             # holdout rows both models were scored on
    tolerance: float                      # how much worse the candidate may be
    production_version: int | None        # None: no production version yet
    production_logloss: float | None      # None: none, or it could not be loaded
    production_loadable: bool = True      # False: written in a format this code can't read


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    production_version: int | None = None
    production_logloss: float | None = None
    candidate_logloss: float | None = None
    tolerance: float | None = None

    def comparison_tags(self) -> dict[str, str]:
        """Version tags recording the comparison, when there was one."""
        if self.production_logloss is None or self.production_version is None:
            return {}
        return {"compared_with_version": str(self.production_version),
                "production_holdout_logloss": f"{self.production_logloss:.6f}",
                "candidate_holdout_logloss": f"{self.candidate_logloss:.6f}",
                "promotion_tolerance": f"{self.tolerance:g}"}


def decide(e: Evidence) -> Decision:
    """Promote when the candidate's holdout logloss is no worse than production's on the
    same rows, within `tolerance`; the first model, and a replacement for a production
    model this code cannot load, are promoted."""
    if e.production_version == e.version:
        return Decision(True, "already production", e.version)
    if e.production_version is None:
        return Decision(True, "first model: no production version to compare with")
    if not e.production_loadable or e.production_logloss is None:
        return Decision(True, f"production v{e.production_version} was written in a "
                              "transform format this code cannot load; the new version "
                              "replaces it", e.production_version)
    better = e.candidate_logloss <= e.production_logloss + e.tolerance
    verdict = "no worse than" if better else "worse than"
    return Decision(
        better,
        f"holdout logloss {e.candidate_logloss:.6f} is {verdict} production "
        f"v{e.production_version}'s {e.production_logloss:.6f} on the same {e.rows} "
        f"holdout rows (tolerance {e.tolerance:g})",
        e.production_version, e.production_logloss, e.candidate_logloss, e.tolerance)
