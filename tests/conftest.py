"""One local cloud per test session, shared by tests/integration and tests/e2e: the
`cloud` fixture lives in tests/cloud.py and is started only when a test asks for it."""

pytest_plugins = ["tests.cloud"]
