"""Import xgboost without its scikit-learn wrapper (a side effect of importing this).

xgboost imports scikit-learn at import time whenever it is installed, for the
XGBClassifier-style wrappers; that pulls in scikit-learn and most of SciPy (about 500
modules, 1.6 s of a cold start measured in the dev environment, where MLflow's extras
bring scikit-learn). Serving and batch scoring use `xgboost.Booster` only, and their
Lambda layer has no scikit-learn, so the predict and score paths import xgboost with
scikit-learn hidden for the duration of that one import (`ctr.serving` and
`ctr.scoring` import this module first). scikit-learn stays importable afterwards; only
xgboost's own wrappers in this process see it as absent. Without effect when xgboost
is already imported.
"""

from __future__ import annotations

import importlib
import sys


def import_xgboost_without_sklearn() -> None:
    if "xgboost" in sys.modules:
        return
    hide = "sklearn" not in sys.modules
    if hide:
        sys.modules["sklearn"] = None  # type: ignore[assignment]  # import -> ImportError
    try:
        importlib.import_module("xgboost")
    finally:
        if hide:
            sys.modules.pop("sklearn", None)


import_xgboost_without_sklearn()
