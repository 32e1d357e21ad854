"""The static leaderboard site: written from records, opened in a real headless browser.

The browser test needs Chromium and its driver (Debian: ``chromium chromium-driver``, which
`.ci/run` installs) and selenium. Without them it is skipped, unless
``UQBENCH_REQUIRE_BROWSER=1`` (set by `.ci/run`), where it fails: CI must not pass by
skipping it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from uqbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("UQBENCH_SCREENSHOTS", ROOT / "tests" / "screenshots"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Two methods x two seeds of quick runs on nbody, and the site built from them."""
    tmp = tmp_path_factory.mktemp("site")
    results, out = tmp / "results", tmp / "leaderboard"
    for method in ("egnn", "mcdropout-egnn"):
        for seed in (0, 1):
            assert main(["run", "-m", method, "-d", "nbody", "--quick", "--seed", str(seed),
                         "-p", "max_steps=8", "-p", "n_samples=4" if "drop" in method
                         else "max_epochs=2", "--out", str(results)]) == 0
    assert main(["leaderboard", "--results", str(results), "--out", str(out)]) == 0
    return out


def test_site_files_are_self_contained_and_link_only_to_local_files(site):
    index = (site / "index.html").read_text()
    page = (site / "nbody.html").read_text()
    assert 'href="nbody.html"' in index
    for text in (index, page):
        assert "http://" not in text.replace("http://www.w3.org", "")
        assert "https://" not in text or "src=\"https://" not in text
        assert "<script src=" not in text  # everything inline: works from file://
    import re

    for src in re.findall(r'<img src="([^"]+)"', page):
        assert (site / src).is_file(), src
    assert "quick" in page.lower() and "not results" in page


def _browser():
    require = os.environ.get("UQBENCH_REQUIRE_BROWSER") == "1"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    if not (chromium and driver and webdriver):
        message = "needs chromium, chromedriver and selenium (apt: chromium chromium-driver)"
        if require:
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1250,1400"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _column(browser, table_id: str, cls: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [td.text for td in browser.find_elements(By.CSS_SELECTOR,
                                                     f"#{table_id} tbody td.{cls}")]


def test_site_in_a_real_browser_tables_sort_filter_and_images_load(site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser = _browser()
    try:
        browser.get((site / "index.html").as_uri())
        rows = browser.find_elements(By.CSS_SELECTOR, "#datasets tbody tr")
        assert [r.find_element(By.CSS_SELECTOR, "td.d_name").text.split()[0]
                for r in rows] == ["nbody"]
        browser.find_element(By.LINK_TEXT, "nbody").click()
        assert browser.current_url.endswith("nbody.html")

        # every image loads
        images = browser.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 4
        for img in images:
            assert browser.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", img), \
                img.get_attribute("src")

        # the page opens on the ranked table, sorted by test force CRPS, better first
        headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
        assert headings[0] == "Ranking"
        ranked = browser.find_elements(By.CSS_SELECTOR, "#ranked-n200 tbody tr")
        assert len(ranked) == 2
        crps = [float(v.split(" ")[0]) for v in _column(browser, "ranked-n200",
                                                        "test_forces_crps")]
        assert crps == sorted(crps)
        assert "asc" in browser.find_element(
            By.CSS_SELECTOR, '#ranked-n200 th[data-sort="test_forces_crps"]'
        ).get_attribute("class")
        # and ranks by another column on a click
        browser.find_element(By.CSS_SELECTOR,
                             '#ranked-n200 th[data-sort="r_predict"]').click()
        cost = [float(v) for v in _column(browser, "ranked-n200", "r_predict")]
        assert cost == sorted(cost)

        # the table renders every row: 2 methods x 3 splits x 2 targets
        rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        assert len(rows) == 12
        assert set(_column(browser, "results", "method")) == {"egnn", "mcdropout-egnn"}

        # sorting by RMSE orders the rows by it, and again reversed
        header = browser.find_element(By.CSS_SELECTOR, '#results th[data-sort="rmse"]')
        header.click()
        first = [float(v.split(" ")[0]) for v in _column(browser, "results", "rmse")]
        assert first == sorted(first)
        header.click()
        second = [float(v.split(" ")[0]) for v in _column(browser, "results", "rmse")]
        assert second == sorted(second, reverse=True) and second != first

        # filtering by split and target leaves the matching rows only
        Select(browser.find_element(By.CSS_SELECTOR, 'select[data-col="split"]')
               ).select_by_visible_text("ood-n")
        Select(browser.find_element(By.CSS_SELECTOR, 'select[data-col="target"]')
               ).select_by_visible_text("forces")
        shown = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        assert len(shown) == 2
        assert set(_column(browser, "results", "split")) == {"ood-n"}
        assert browser.find_element(By.CSS_SELECTOR, "#results .shown").text == "2"

        # the provenance table lists every record
        assert len(browser.find_elements(By.CSS_SELECTOR, "#records tbody tr")) == 4
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / "nbody-site.png"))
    finally:
        browser.quit()
