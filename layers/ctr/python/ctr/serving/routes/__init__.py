"""The predict API's routes, one `APIRouter` per concern: `predict`, `status` (health
and model info), `samples`, and `web` (the page and its static files)."""
