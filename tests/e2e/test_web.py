"""The web page in a real browser against real servers: what a person sees and does.

Each test saves screenshots under test-artifacts/e2e/ (see conftest.py).
"""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.conftest import screenshot

PREDICT = "**/predict"


def test_no_model_state_is_explained(page: Page, empty_api: str) -> None:
    page.goto(f"{empty_api}/")

    expect(page.locator("#production-card")).to_have_attribute("data-state", "no-model")
    expect(page.locator("#no-model")).to_contain_text("No model in production yet")
    expect(page.locator("#api-status")).to_contain_text("No model yet")
    # An empty bucket has no audit trail either: the timeline says so.
    expect(page.locator("#history-card")).to_have_attribute("data-state", "empty")
    expect(page.locator("#history-empty")).to_contain_text("No registry events yet")

    # Asking anyway shows the API's own 503 message, not a generic failure.
    api_answer = httpx.post(f"{empty_api}/predict", json={"rows": [{}]}, timeout=30)
    assert api_answer.status_code == 503
    page.click("#fields-form button[type=submit]")
    result = page.locator("#result")
    expect(result).to_have_attribute("data-state", "no-model")
    expect(result).to_contain_text(api_answer.json()["message"])
    screenshot(page, "no-model")


def test_sample_prediction_shows_probability_and_production_version(
        page: Page, live_api: str) -> None:
    info = httpx.get(f"{live_api}/model-info", timeout=30).json()
    version = info["production_version"]
    page.goto(f"{live_api}/")
    expect(page.locator("#production-version")).to_contain_text(f"v{version}")

    page.click("#load-sample")
    expect(page.locator("#sample-note")).to_have_attribute("data-state", "ready")
    filled = [page.input_value(f"#f-C{i}") for i in range(1, 27)]
    assert any(filled), "Load a sample left every categorical field empty"

    with page.expect_response(PREDICT) as answered:
        page.click("#fields-form button[type=submit]")
    body = answered.value.json()
    result = page.locator("#result")
    expect(result).to_have_attribute("data-state", "done")
    probability = float(page.inner_text("#result-probability"))
    percentage = float(page.inner_text("#result-percentage").rstrip("%"))
    assert 0.0 <= probability <= 1.0
    assert abs(probability - body["predictions"][0]) <= 5e-7
    assert abs(percentage - probability * 100) < 0.006
    expect(page.locator("#result-version")).to_have_text(f"v{version}")
    assert body["model"]["version"] == version
    expect(result).to_contain_text(body["model"]["run_id"])
    expect(result).to_contain_text(body["model"]["artifact_uri"])
    screenshot(page, "prediction-from-fields")

    # The same sample as a raw TSV line gets the same answer (one transform for both).
    page.click("#tab-line")
    assert page.input_value("#tsv-line").count("\t") >= 38
    with page.expect_response(PREDICT) as answered_line:
        page.click("#line-form button[type=submit]")
    expect(result).to_have_attribute("data-state", "done")
    from_line = answered_line.value.json()["predictions"][0]
    assert abs(from_line - body["predictions"][0]) < 1e-6
    screenshot(page, "prediction-from-line")


def test_bad_categorical_value_shows_the_api_error_next_to_the_field(
        page: Page, live_api: str) -> None:
    bad = "zzzzzzzz"
    direct = httpx.post(f"{live_api}/predict", json={"rows": [{"C3": bad}]}, timeout=30)
    assert direct.status_code == 422
    messages = [e["msg"] for e in direct.json()["errors"] if "C3" in e["loc"]]
    assert messages, direct.json()

    page.goto(f"{live_api}/")
    page.click("#load-sample")
    expect(page.locator("#sample-note")).to_have_attribute("data-state", "ready")
    page.fill("#f-C3", bad)
    page.click("#fields-form button[type=submit]")

    expect(page.locator("#result")).to_have_attribute("data-state", "invalid")
    expect(page.locator("#f-C3-error")).to_have_text(messages[0])
    expect(page.locator("#f-C3")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-C3")).to_be_focused()
    screenshot(page, "invalid-categorical")


def test_page_fits_a_narrow_screen(page: Page, live_api: str) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_api}/")
    expect(page.locator("#versions-card")).to_have_attribute("data-state", "ready")
    # The registry timeline loads (from /model-history) and wraps on a narrow screen too.
    expect(page.locator("#history-card")).to_have_attribute("data-state",
                                                            re.compile("^(ready|empty)$"))
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a 390px screen"
    screenshot(page, "mobile")
