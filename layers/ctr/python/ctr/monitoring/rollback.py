"""The auto-rollback rule as a pure function: evidence on one fresh part in, verdict out.

`previous` replaces `production` (ctr.registry.promotion.rollback, audited, and the
state machine publishes it at once) only when all of these hold:

* AutoRollback is on, and no rollback happened earlier in this execution (one per
  execution);
* the part has at least `min_rows` rows (RollbackMinRows; the gate's HoldoutMinRows
  idea: below it a difference of a few 1e-3 in logloss is noise);
* the same kind of evidence the promotion gate uses, with the roles of the gate:
  the one-sided 95% upper bound of the mean per-row logloss difference (previous -
  production, batch means over time blocks, `ctr.metrics.paired_difference`) is below
  `-tolerance` (PromotionTolerance): previous is better beyond the tolerance with 95%
  confidence, not merely "no worse" as for a promotion;
* previous passes the gate's calibration guard on the part (its calibration ratio's 95%
  interval reaches 1 +- CalibrationBand);
* previous was not itself demoted by an earlier automatic rollback (tag
  `demoted_by_auto_rollback`): a version that lost once on fresh data is never restored
  automatically, so two versions cannot flip back and forth on noise. (A rollback also
  clears `previous`, so a second automatic rollback needs a new promotion first.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ctr.metrics import PairedBound
from ctr.registry.decision import GatePolicy

AUTO_ROLLBACK_REASON = "auto-rollback"     # the audit record's reason starts with it


@dataclass(frozen=True)
class RollbackPolicy:
    """The stack parameters AutoRollback and RollbackMinRows, and the gate's tolerance
    and calibration band."""

    enabled: bool = True
    min_rows: int = 200_000
    gate: GatePolicy = field(default_factory=GatePolicy)


@dataclass(frozen=True)
class RollbackEvidence:
    part: int
    rows: int
    production_version: int
    previous_version: int | None
    logloss_difference: PairedBound | None      # previous - production, per row
    previous_calibration: tuple[float, float, float] | None   # ratio, low95, high95
    previous_demoted_by_rollback: bool = False
    already_rolled_back: bool = False            # in this execution


@dataclass(frozen=True)
class RollbackDecision:
    roll_back: bool
    reason: str

    @staticmethod
    def no(reason: str) -> RollbackDecision:
        return RollbackDecision(False, reason)


def decide_rollback(e: RollbackEvidence, policy: RollbackPolicy) -> RollbackDecision:
    """Roll back or not (the module docstring has the rule), with the reason."""
    if not policy.enabled:
        return RollbackDecision.no("AutoRollback is off")
    if e.previous_version is None:
        return RollbackDecision.no("no previous version")
    if e.already_rolled_back:
        return RollbackDecision.no("already rolled back once in this execution")
    if e.previous_demoted_by_rollback:
        return RollbackDecision.no(f"previous v{e.previous_version} was demoted by an "
                                   "automatic rollback before: never restored automatically")
    if e.rows < policy.min_rows:
        return RollbackDecision.no(f"part {e.part} has {e.rows} rows, fewer than "
                                   f"RollbackMinRows {policy.min_rows}")
    d = e.logloss_difference
    if d is None or d.blocks < 2:
        return RollbackDecision.no("no paired evidence")
    bound = (f"mean per-row logloss difference (v{e.previous_version} - "
             f"v{e.production_version}) {d.mean:+.6f}, 95% upper bound {d.upper:+.6f} on "
             f"{d.rows} rows of part {e.part} ({d.blocks} time blocks)")
    if not d.upper < -policy.gate.tolerance:
        return RollbackDecision.no(f"previous not proven better: {bound} >= "
                                   f"-{policy.gate.tolerance:g}")
    if e.previous_calibration is not None:
        ratio, low, high = e.previous_calibration
        band = policy.gate.calibration_band
        if low > 1 + band or high < 1 - band:
            return RollbackDecision.no(
                f"previous v{e.previous_version} is better but miscalibrated on part "
                f"{e.part}: ratio {ratio:.3f} (95% interval {low:.3f}-{high:.3f}) outside "
                f"1 +- {band:g}")
    return RollbackDecision(True, f"previous v{e.previous_version} beats production "
                                  f"v{e.production_version} on fresh data: {bound} < "
                                  f"-{policy.gate.tolerance:g}")
