"""The case-review page: its JSON API, and a real headless Chromium rating a case end to end."""

from __future__ import annotations

import io
import os
import shutil

import pytest
from PIL import Image

from medmodal.serving.app import create_app
from medmodal.serving.ratings import RatingStore

from .conftest import LiveServer, local_client


@pytest.fixture()
def review_app(tiny_run, tiny_data, predictor, tmp_path):
    db = tmp_path / "ratings.db"
    return create_app(tiny_run, predictor=predictor, data=tiny_data, split="test", ratings_url=db), db


def test_review_api(review_app):
    app, db = review_app
    with local_client(app) as client:
        worklist = client.get("/v1/review/studies").json()
        assert worklist["split"] == "test" and worklist["studies"]
        study = worklist["studies"][0]
        case = client.get(f"/v1/review/studies/{study['id']}").json()
        assert case["reference_report"] and set(case["prediction"]["labels"]) == set(
            case["prediction"]["labels"]
        )
        assert case["error_types"] == [
            "missed_finding",
            "false_finding",
            "wrong_laterality",
            "wrong_severity",
        ]
        image = Image.open(io.BytesIO(client.get(f"/v1/review/studies/{study['id']}/image.png").content))
        saliency = Image.open(
            io.BytesIO(client.get(f"/v1/review/studies/{study['id']}/saliency.png").content)
        )
        assert image.size == saliency.size == (48, 48) and saliency.mode == "RGBA"
        assert max(saliency.getchannel("A").getdata()) > 0  # something is highlighted
        assert client.get("/v1/review/studies/nope").status_code == 404
        bad = client.post(
            "/v1/review/ratings",
            json={"study_id": study["id"], "reader": "r", "acceptable": True, "errors": ["typo"]},
        )
        assert bad.status_code == 422 and "unknown error types" in bad.json()["detail"]
        assert (
            client.post(
                "/v1/review/ratings", json={"study_id": "nope", "reader": "r", "acceptable": True}
            ).status_code
            == 404
        )
        ok = client.post(
            "/v1/review/ratings",
            json={
                "study_id": study["id"],
                "reader": "r",
                "acceptable": False,
                "errors": ["false_finding"],
                "comment": "c",
            },
        )
        assert ok.status_code == 200
        assert client.get("/v1/review/studies").json()["studies"][0]["n_ratings"] == 1
        assert "false_finding" in client.get("/v1/review/ratings.csv").text.splitlines()[0]
        assert client.get("/v1/review/ratings/summary").json()["error_counts"]["false_finding"] == 1
        page = client.get("/review/").text
        assert "review.js" in page and "http" not in page.replace("http-equiv", "")  # no external resources
    assert len(RatingStore(db).rows()) == 1


def chrome_driver():
    """Headless Chromium through Selenium, with the system's chromium + chromedriver (scripts/setup.sh)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    browser = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    if driver_path is None or browser is None:
        pytest.skip(
            "no chromium + chromedriver on PATH (scripts/setup.sh installs them with apt-get: "
            "chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


@pytest.mark.skipif(os.environ.get("MEDMODAL_SKIP_BROWSER") == "1", reason="MEDMODAL_SKIP_BROWSER=1")
def test_reader_rates_a_case_in_a_real_browser(review_app):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    app, db = review_app
    driver = chrome_driver()
    try:
        with LiveServer(app) as server:
            wait = WebDriverWait(driver, 60)
            driver.get(f"{server.url}/review/")
            links = wait.until(
                EC.presence_of_all_elements_located((By.CSS_SELECTOR, "#worklist a.case-link"))
            )
            study_id = links[0].text
            links[0].click()
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#predictions tbody tr")))
            wait.until(lambda d: d.find_element(By.ID, "generated-report").text.strip())
            assert driver.find_element(By.ID, "case-id").text == study_id
            assert driver.find_element(By.ID, "reference-report").text.strip()
            assert len(driver.find_elements(By.CSS_SELECTOR, "#predictions tbody tr")) == 6
            assert driver.find_elements(By.CSS_SELECTOR, "#word-attention span")  # highlighted words
            # the canvas has been drawn on (not all black)
            drawn = driver.execute_script(
                "const c = document.getElementById('image-canvas');"
                "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                "let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s;"
            )
            assert drawn > 0

            driver.find_element(By.ID, "reader").send_keys("dr-test")
            driver.find_element(By.ID, "acceptable-no").click()
            driver.find_element(By.ID, "error-missed_finding").click()
            driver.find_element(By.ID, "error-wrong_laterality").click()
            driver.find_element(By.ID, "comment").send_keys("misses the left effusion")
            driver.find_element(By.ID, "submit-rating").click()
            wait.until(EC.text_to_be_present_in_element((By.ID, "rating-status"), "saved"))
            wait.until(EC.text_to_be_present_in_element((By.ID, "case-ratings"), "dr-test"))
    finally:
        driver.quit()
    rows = RatingStore(db).records()
    assert len(rows) == 1
    row = rows[0]
    assert (row["study_id"], row["reader"], row["acceptable"]) == (study_id, "dr-test", False)
    assert row["missed_finding"] and row["wrong_laterality"] and not row["false_finding"]
    assert row["comment"] == "misses the left effusion"


def test_review_page_security_headers_and_no_html_injection_sinks(review_app):
    app, _ = review_app
    with local_client(app) as client:
        page = client.get("/review/")
        assert (
            "script-src" not in page.headers["content-security-policy"]
        )  # default-src 'self' covers scripts
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert (
            page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        )
        api = client.get("/v1/review/studies")
        assert api.headers["cache-control"] == "no-store"
        for escape in ("%2e%2e/__init__.py", "%2e%2e/%2e%2e/app.py", "..%2f..%2fapp.py", "%2fetc%2fpasswd"):
            response = client.get(f"/review/static/{escape}")
            assert response.status_code == 404, escape  # static files stay in their folder
            assert "import" not in response.text and "root:" not in response.text
    # Reader comments, names and report text reach the page: it must only ever set them as text.
    from medmodal.serving.review import STATIC

    script = (STATIC / "review.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert "textContent" in script
