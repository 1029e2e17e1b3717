"""Headless Chromium through selenium, for the web pages' browser tests and screenshots.

Debian's ``chromium`` and ``chromium-driver`` are used. Without them the browser tests
skip with the reason, unless ``IMAGEHOST_TEST_REQUIRE_BROWSER=1`` (set by ``.ci/run``)
makes that a failure, so CI always runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("IMAGEHOST_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("IMAGEHOST_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
AXE_JS = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
# Without these, Chromium keeps calling Google hosts, which this closed network refuses.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")
# Collects Content-Security-Policy violations of every page from its first script on.
_CSP_WATCH = ("window.__csp = []; document.addEventListener('securitypolicyviolation',"
              " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


def missing_browser() -> str | None:
    """Why no browser test can run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


def start_chromium(width: int = 1280, height: int = 900, downloads: Path | None = None):
    """A new headless Chromium with a fresh profile; ``quit()`` it (profile removed too)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="imagehost-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    if downloads is not None:
        options.add_experimental_option("prefs", {
            "download.default_directory": str(downloads), "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _CSP_WATCH})
    if downloads is not None:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                               {"behavior": "allow", "downloadPath": str(downloads)})
    original_quit = driver.quit

    def quit_and_clean() -> None:
        original_quit()
        shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    return driver


def color_scheme(driver, scheme: str) -> None:
    """Emulate ``prefers-color-scheme: light`` or ``dark``."""
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": scheme}]})


def axe_violations(driver, impacts=("critical", "serious")) -> list[str]:
    """axe-core's violations of the current page at these impacts, one line each."""
    driver.execute_script(AXE_JS.read_text(encoding="utf-8"))
    violations = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(r.violations), e => done([{id: 'axe-error', impact: 'critical',"
        " help: String(e), nodes: []}]));")
    return [f"{v['id']} ({v['impact']}): {v['help']} at "
            + ", ".join(n["target"][0] for n in v["nodes"][:3] if n.get("target"))
            for v in violations if v["impact"] in impacts]


def csp_violations(driver) -> list[str]:
    return driver.execute_script("return window.__csp || [];")


def api(base_url: str, method: str, path: str, body=None, token: str | None = None):
    """A JSON API call from a test thread (blocking); returns the decoded body or None."""
    request = urllib.request.Request(base_url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if raw else None
