"""The jobs page at `/` in a real browser: Debian's headless Chromium against `modelpress run`.

The page's script reads each live job's events with `fetch` streaming and updates the row in
place; with auth on it asks for the key once, keeps it in sessionStorage and lists the tenant's
jobs. `.ci/run` installs chromium and chromium-driver where they are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
# Runs before the page's own script (DevTools injects it, the page's CSP does not apply): every
# `data-status` a job row ever had, in order, so that a short `running` phase is not missed.
RECORDER = """
window.__statuses = {};
const note = (id, status) => {
  const seen = (window.__statuses[id] ||= []);
  if (status && seen[seen.length - 1] !== status) seen.push(status);
};
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("tr.job").forEach((tr) => note(tr.dataset.jobId, tr.dataset.status));
  new MutationObserver((changes) => {
    // Old values first: two changes in one task (running, then succeeded) both count.
    changes.forEach((c) => {
      if (c.type === "attributes") note(c.target.dataset.jobId, c.oldValue);
      c.addedNodes.forEach((n) => n.matches && n.matches("tr.job") &&
                                  note(n.dataset.jobId, n.dataset.status));
    });
    changes.forEach((c) => c.type === "attributes" &&
                           note(c.target.dataset.jobId, c.target.dataset.status));
  }).observe(document.body, {subtree: true, childList: true, attributes: true,
                              attributeOldValue: true, attributeFilter: ["data-status"]});
});
"""
SLOW_BENCHMARK = {  # a job that runs far longer than the test: it holds the one local worker
    "batch_sizes": [64],
    "iterations": 2000,
    "time_budget_s": 300,
    "noise_control": False,
    "memory": False,
    "input_shapes": {"input_ids": [64, 128]},
}
QUICK_BENCHMARK = {"batch_sizes": [1], "iterations": 5, "noise_control": False, "memory": False}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, CSP too
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="mp-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _upload(client: httpx.Client, path: Path, headers: dict[str, str] | None = None) -> str:
    with path.open("rb") as fh:
        response = client.post(
            "/v1/models?wait=true", files={"file": (path.name, fh)}, headers=headers or {}
        )
    assert response.status_code == 201 and response.json()["status"] == "ready", response.text
    return str(response.json()["id"])


def _submit(
    client: httpx.Client,
    model_id: str,
    benchmark: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> str:
    spec = {"model_id": model_id, "steps": [{"op": "quantize"}], "benchmark": benchmark}
    response = client.post("/v1/jobs", json=spec, headers=headers or {})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _row(driver: Any, job_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'tr.job[data-job-id="{job_id}"]')


def _cell(driver: Any, job_id: str, name: str) -> str | None:
    """The text of one cell of the job's row (None: no such row)."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "const tr = document.querySelector(`tr.job[data-job-id='${arguments[0]}']`);"
        "return tr ? tr.querySelector('td.' + arguments[1]).textContent.trim() : null;",
        job_id,
        name,
    )


def _status(driver: Any, job_id: str) -> str | None:
    return driver.execute_script(  # type: ignore[no-any-return]
        "const tr = document.querySelector(`tr.job[data-job-id='${arguments[0]}']`);"
        "return tr ? tr.dataset.status : null;",
        job_id,
    )


def _verdict_text(verdict: dict[str, Any]) -> str:
    """What the page's verdict cell says: met, not met with the checks missed, or no budget."""
    if verdict.get("met") is True:
        return "met"
    if verdict.get("met") is False:
        missed = [r.removeprefix("missed: ") for r in verdict["reasons"] if r.startswith("missed")]
        return "not met" + (f": {'; '.join(missed)}" if missed else "")
    return "no budget"


def test_page_follows_a_job_live_to_its_verdict(
    server: Any, browser: Any, helpers: Any, mlp_onnx: Path, transformer_onnx: Path
) -> None:
    # Both uploads first: the one local worker inspects models too.
    big, small = _upload(server, transformer_onnx), _upload(server, mlp_onnx)
    blocker = _submit(server, big, SLOW_BENCHMARK)
    helpers.wait_for(
        lambda: server.get(f"/v1/jobs/{blocker}").json()["status"] == "running", 120, "the blocker"
    )
    job_id = _submit(server, small, QUICK_BENCHMARK)

    browser.get(str(server.base_url))
    browser.execute_script("window.__notReloaded = true;")
    first_seen = _status(browser, job_id)
    assert server.post(f"/v1/jobs/{blocker}/cancel").status_code == 200
    helpers.wait_for(lambda: _status(browser, job_id) == "succeeded", 180, "the row to succeed")
    helpers.wait_for(lambda: _cell(browser, job_id, "verdict"), 30, "the verdict")

    assert first_seen == "queued", server.proc.tail()  # the one worker was busy with the blocker
    seen = browser.execute_script("return window.__statuses[arguments[0]];", job_id)
    assert seen == ["queued", "running", "succeeded"], seen
    assert browser.execute_script("return window.__notReloaded === true;")
    assert _status(browser, blocker) == "cancelled"
    report = server.get(f"/v1/jobs/{job_id}/report").json()
    assert _cell(browser, job_id, "verdict") == _verdict_text(report["verdict"])
    row = _row(browser, job_id)
    assert row.find_element("css selector", "progress").get_attribute("value") == "1"
    hrefs = [a.get_attribute("href") for a in row.find_elements("css selector", "td.links a")]
    base = str(server.base_url).rstrip("/")
    assert f"{base}/v1/jobs/{job_id}/report.html" in hrefs
    assert f"{base}/v1/jobs/{job_id}/report" in hrefs
    assert f"{base}/v1/jobs/{job_id}/artifacts/model.onnx" in hrefs
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name);"
    )
    assert f"{base}/v1/jobs/{job_id}/events" in fetched, fetched  # streamed, not polled
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors  # no CSP violation, no script error
    later = _submit(server, small, QUICK_BENCHMARK)  # submitted after the page loaded
    helpers.wait_for(lambda: _status(browser, later), 30, "the new job to appear")
    assert browser.execute_script("return document.querySelector('tr.job').dataset.jobId;") == later
    assert browser.execute_script("return window.__notReloaded === true;")


@pytest.fixture
def auth_server(tmp_path: Path, spawn: Callable[..., Any], helpers: Any) -> Iterator[Any]:
    """`modelpress run` with MODELPRESS_AUTH_REQUIRED=true, and a key for tenants a and b."""
    port = helpers.free_port()
    env = helpers.process_env(
        {
            "PORT": str(port),
            "MODELPRESS_DATA_DIR": str(tmp_path / "data"),
            "MODELPRESS_AUTH_REQUIRED": "true",
        }
    )
    spawn(["run"], env, "run-auth")
    client = helpers.api_client(port)
    client.keys = {}  # type: ignore[attr-defined]
    for tenant in ("a", "b"):
        out = subprocess.run(
            [sys.executable, "-m", "app.cli", "admin", "create-key", "--tenant", tenant],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        client.keys[tenant] = out.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    yield client
    client.close()


def test_with_auth_on_the_page_asks_for_the_key_once_and_lists_the_tenants_jobs(
    auth_server: Any, browser: Any, helpers: Any, mlp_onnx: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    a = {"Authorization": f"Bearer {auth_server.keys['a']}"}
    b = {"Authorization": f"Bearer {auth_server.keys['b']}"}
    model_a, model_b = _upload(auth_server, mlp_onnx, a), _upload(auth_server, mlp_onnx, b)
    job_a = _submit(auth_server, model_a, QUICK_BENCHMARK, a)
    job_b = _submit(auth_server, model_b, QUICK_BENCHMARK, b)

    browser.get(str(auth_server.base_url))
    form = browser.find_element(By.ID, "key-form")
    assert form.is_displayed() and not browser.find_element(By.ID, "jobs").is_displayed()
    browser.find_element(By.ID, "api-key").send_keys("mp_0000000000000000_wrong")
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    helpers.wait_for(lambda: browser.find_element(By.ID, "key-error").is_displayed(), 30, "401")
    browser.find_element(By.ID, "api-key").send_keys(auth_server.keys["a"])
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    helpers.wait_for(lambda: _status(browser, job_a), 30, "tenant a's job on the page")
    helpers.wait_for(lambda: _status(browser, job_a) == "succeeded", 180, "the row to succeed")
    browser.refresh()
    helpers.wait_for(lambda: _status(browser, job_a) == "succeeded", 30, "the list after reload")

    assert not browser.find_element(By.ID, "key-form").is_displayed()  # asked once: kept
    assert _status(browser, job_b) is None  # another tenant's job never shows
    stored = browser.execute_script("return sessionStorage.getItem('modelpress.apiKey');")
    assert stored == auth_server.keys["a"]
    assert _cell(browser, job_a, "model") == mlp_onnx.name
    report = auth_server.get(f"/v1/jobs/{job_a}/report", headers=a).json()
    assert _cell(browser, job_a, "verdict") == _verdict_text(report["verdict"])
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert [e for e in errors if "401" not in e["message"]] == [], errors
    # A link goes through fetch with the key (a plain one would be 401) and saves the file.
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    _row(browser, job_a).find_element(By.LINK_TEXT, "report.json").click()
    saved = downloads / f"report-{job_a}.json"
    helpers.wait_for(saved.exists, 30, "the report's download")
    assert json.loads(saved.read_text()) == report
