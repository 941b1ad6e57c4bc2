"""The predict API: a FastAPI app (wrapped by Mangum in the predict Lambda) that
serves the bundle named by `serving/production.json` and never imports MLflow.

`app.create_app(settings)` builds it from the routers in `routes`; `model_cache` follows
the production pointer; `schemas` holds the request/response models; `errors` maps
every error to one JSON shape in one place; `body_limit` answers 413 to oversized
bodies; `settings` and `dependencies` are what the routes are given.
"""

from ctr import xgb_import  # noqa: F401  # xgboost without its scikit-learn wrapper: a cold start
