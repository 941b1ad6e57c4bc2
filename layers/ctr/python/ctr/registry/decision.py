"""The promotion gate's decision as a pure function: measured evidence in, verdict out.

No MLflow, no I/O: `ctr.registry.gate` measures the evidence (candidate and production,
or the constant prior for a first model, scored on the same holdout rows) and
`ctr.registry.promotion.apply_decision` carries the verdict out (tags, alias moves).

The rule (the README's "Promotion gate" says the same):

* Logloss, paired: from the per-row logloss differences (candidate - production) on the
  holdout, the mean and its one-sided 95% upper bound (batch means over time blocks,
  `ctr.metrics.paired_difference`). Promote only when the upper bound is at most
  `tolerance`: the candidate is, with 95% confidence, no worse than production by more
  than the tolerance. The tolerance is a small positive number because a model trained on
  fresher data that is statistically indistinguishable should replace the old one; with 0,
  an equal model would be kept out by its own noise.
* Guards: the candidate's calibration ratio (mean prediction / observed rate) on the
  holdout not significantly outside 1 +- `calibration_band` (its 95% interval must reach
  the band: on a small holdout the observed rate is itself noisy); and its AUC not
  significantly lower than
  production's (upper bound of the per-block AUC difference at least `-auc_tolerance`).
* A first model must beat the constant prior (the training rows' click rate) with the
  same kind of evidence: upper bound of (model - prior) below 0. Otherwise nothing is
  served and the version is rejected with the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctr.metrics import PairedBound


@dataclass(frozen=True)
class GatePolicy:
    """The stack parameters PromotionTolerance, CalibrationBand, AucTolerance."""

    # 0.001 logloss is ~0.2% of a typical Criteo logloss (~0.45): far below what a user
    # would notice, far above the ~1e-4 noise of the default 200,000-row holdout.
    tolerance: float = 0.001
    calibration_band: float = 0.1
    auc_tolerance: float = 0.0


@dataclass(frozen=True)
class Evidence:
    """What the gate measured for one candidate on one holdout."""

    version: int
    rows: int
    candidate_logloss: float
    calibration_ratio: float                   # the candidate's, on the holdout
    production_version: int | None            # None: no production version yet
    calibration_interval: tuple[float, float] | None = None   # the ratio's 95% bounds
    # candidate - production per-row logloss; for a first model, candidate - prior.
    logloss_difference: PairedBound | None = None
    production_logloss: float | None = None   # None: none, or it could not be loaded
    prior_logloss: float | None = None
    auc_difference: PairedBound | None = None  # candidate - production, per time block
    production_loadable: bool = True          # False: a format this code can't read


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    production_version: int | None = None
    production_logloss: float | None = None
    evidence: Evidence | None = None
    policy: GatePolicy | None = None

    def numbers(self) -> dict[str, str]:
        """The comparison, as version tags and run summary values (strings)."""
        e, p = self.evidence, self.policy
        if e is None or p is None:
            return {}
        out = {"gate_rows": str(e.rows),
               "candidate_holdout_logloss": f"{e.candidate_logloss:.6f}",
               "calibration_ratio": f"{e.calibration_ratio:.4f}",
               **({"calibration_low95": f"{e.calibration_interval[0]:.4f}",
                   "calibration_high95": f"{e.calibration_interval[1]:.4f}"}
                  if e.calibration_interval else {}),
               "calibration_band": f"{p.calibration_band:g}",
               "promotion_tolerance": f"{p.tolerance:g}"}
        if e.production_logloss is not None and e.production_version is not None:
            out |= {"compared_with_version": str(e.production_version),
                    "production_holdout_logloss": f"{e.production_logloss:.6f}"}
        elif e.prior_logloss is not None:
            out |= {"compared_with_version": "prior",
                    "prior_holdout_logloss": f"{e.prior_logloss:.6f}"}
        if e.logloss_difference is not None:
            d = e.logloss_difference
            out |= {"gate_blocks": str(d.blocks), "logloss_diff_mean": f"{d.mean:+.6f}",
                    "logloss_diff_upper95": f"{d.upper:+.6f}"}
        if e.auc_difference is not None:
            a = e.auc_difference
            out |= {"auc_diff_mean": f"{a.mean:+.5f}", "auc_diff_upper95": f"{a.upper:+.5f}",
                    "auc_tolerance": f"{p.auc_tolerance:g}"}
        return out


def _bound(d: PairedBound) -> str:
    return (f"mean difference {d.mean:+.6f}, 95% upper bound {d.upper:+.6f} on {d.rows} "
            f"holdout rows ({d.blocks} time blocks)")


def decide(e: Evidence, policy: GatePolicy) -> Decision:
    """Promote or reject (see the module docstring for the rule)."""
    def verdict(promoted: bool, reason: str) -> Decision:
        return Decision(promoted, reason, e.production_version, e.production_logloss, e,
                        policy)

    if e.production_version == e.version:
        return verdict(True, "already production")
    low, high = e.calibration_interval or (e.calibration_ratio, e.calibration_ratio)
    if low > 1 + policy.calibration_band or high < 1 - policy.calibration_band:
        return verdict(False, f"calibration ratio {e.calibration_ratio:.3f} (mean prediction "
                              f"/ observed rate on {e.rows} holdout rows, 95% interval "
                              f"{low:.3f}-{high:.3f}) is outside 1 +- "
                              f"{policy.calibration_band:g}")
    if e.production_version is None:
        d = e.logloss_difference
        if d is None or not d.upper < 0:
            return verdict(False, "first model does not beat the constant prior with 95% "
                                  f"confidence: {_bound(d) if d else 'no evidence'}")
        return verdict(True, "first model: beats the constant prior "
                             f"(prior logloss {e.prior_logloss:.6f}); {_bound(d)}")
    if not e.production_loadable or e.production_logloss is None:
        return verdict(True, f"production v{e.production_version} was written in a "
                             "transform format this code cannot load; the new version "
                             "replaces it")
    d = e.logloss_difference
    assert d is not None, "a loadable production model is always scored"
    head = (f"holdout logloss {e.candidate_logloss:.6f} vs production "
            f"v{e.production_version}'s {e.production_logloss:.6f}: {_bound(d)}")
    if not d.upper <= policy.tolerance:
        return verdict(False, f"worse than production v{e.production_version}: {head} > "
                              f"tolerance {policy.tolerance:g}")
    a = e.auc_difference
    if a is not None and a.blocks > 1 and a.upper < -policy.auc_tolerance:
        return verdict(False, f"AUC significantly lower than production "
                              f"v{e.production_version}'s: mean difference {a.mean:+.5f}, "
                              f"95% upper bound {a.upper:+.5f} < -{policy.auc_tolerance:g}")
    return verdict(True, f"no worse than production v{e.production_version}: {head} <= "
                         f"tolerance {policy.tolerance:g}")
