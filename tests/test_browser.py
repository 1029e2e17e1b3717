"""The web pages in a real headless Chromium (selenium) against the real daemon.

Each test's browser steps run on a thread (selenium blocks) while the reactor serves
the daemon. Skipped, with the reason, where Chromium is not installed; CI sets
``IMAGEHOST_TEST_REQUIRE_BROWSER=1`` so there they fail instead.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.browser_support import (
    api,
    axe_violations,
    color_scheme,
    csp_violations,
    missing_browser,
    start_chromium,
)
from tests.conftest import ADMIN, image_bytes

_MISSING = missing_browser()
if _MISSING and os.environ.get("IMAGEHOST_TEST_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"IMAGEHOST_TEST_REQUIRE_BROWSER=1 but {_MISSING}")
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def chromium(downloads):
    driver = start_chromium(downloads=downloads)
    yield driver
    driver.quit()


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    made = {"photo": tmp_path / "photo.jpg", "wide": tmp_path / "wide.png",
            "text": tmp_path / "notes.txt"}
    made["photo"].write_bytes(image_bytes(size=(900, 600), color=(30, 120, 200)))
    made["wide"].write_bytes(image_bytes("PNG", size=(1600, 500), color=(240, 180, 20)))
    made["text"].write_text("not an image\n")
    return made


class Page:
    """One browser on one daemon: navigation, waiting and the steps tests share."""

    def __init__(self, driver, base_url: str):
        self.driver = driver
        self.base = base_url
        color_scheme(driver, "light")
        driver.set_window_size(1280, 900)
        driver.get(base_url + "/health")
        driver.delete_all_cookies()

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def path(self) -> str:
        return self.driver.current_url.removeprefix(self.base)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, css: str, timeout: float = 20):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def click_to_next_page(self, css: str, timeout: float = 20) -> None:
        """Click what loads another page (a form's button, a link) and wait until the
        old page is gone, so that a wait for an element both pages have cannot find the
        old one (a StaleElementReference a moment later)."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        old = self.find("html")
        self.find(css).click()

        def gone(_driver) -> bool:
            try:
                old.is_enabled()
            except WebDriverException:  # stale, or chromedriver's "Node with given id
                return True  # does not belong to the document" while it swaps pages
            return False

        WebDriverWait(self.driver, timeout).until(gone)

    def wait_text(self, css: str, text: str, timeout: float = 10) -> None:
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        # While the page navigates, Chrome may answer for an element of the old document
        # ("Node with given id does not belong to the document"): ask again until timeout.
        WebDriverWait(self.driver, timeout, ignored_exceptions=(WebDriverException,)).until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))

    def title(self) -> str:
        return self.find("h1").text

    def fill(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def login(self, username: str = ADMIN[0], password: str = ADMIN[1]) -> None:
        self.open("/login")
        self.fill("#username", username)
        self.fill("#password", password)
        self.find("form[action='/login'] button").click()
        self.wait("details.menu summary")

    def logout(self) -> None:
        self.find("details.menu summary").click()
        self.find("form[action='/logout'] button").click()
        self.wait("a[href='/login']")

    def upload(self, file: Path, description: str = "") -> Page:
        """Upload through the file input; wait for the result (links or an error)."""
        self.open("/")
        self.find("#image").send_keys(str(file))
        if description:
            self.fill("#description", description)
        self.find("#upload-button").click()
        return self.wait("#uploads li.done, #uploads li.failed")

    def no_csp_violations(self) -> None:
        assert csp_violations(self.driver) == [], self.path()


def in_browser(chromium, server, steps):
    """Run ``steps(page)`` on a thread while the reactor serves the daemon."""
    return deferToThread(lambda: steps(Page(chromium, server.base_url)))


def _admin_token(base: str) -> str:
    return api(base, "POST", "/api/auth/login",
               {"username": ADMIN[0], "password": ADMIN[1]})["access_token"]


@pytest_twisted.ensureDeferred
async def test_upload_browse_copy_edit_hide_and_delete(chromium, server, files):
    def steps(page: Page) -> None:
        page.login()
        result = page.upload(files["photo"], "Blue hour")
        assert "done" in result.get_attribute("class"), result.text
        assert "/image/" in result.text  # the links of the new image
        image_page = result.find_element("css selector", "a").get_attribute("href")
        image_id = image_page.rsplit("/", 1)[1]
        page.no_csp_violations()

        page.open("/images")
        tile = page.find(f"a[href='/i/{image_id}'] img")
        assert tile.get_attribute("loading") == "lazy"
        assert (tile.get_dom_attribute("width"), tile.get_dom_attribute("height")) == ("300", "300")
        assert tile.get_attribute("alt") == "Blue hour"
        tile.click()
        page.wait("#copy-markdown")
        assert page.title() == "Blue hour"
        markdown = page.find("#copy-markdown").get_attribute("value")
        assert markdown == f"![Blue hour]({page.base}/image/{image_id}.jpg)"
        # Size and format change the snippets at once (the page's script).
        from selenium.webdriver.support.ui import Select

        Select(page.find("#size")).select_by_value("640")
        Select(page.find("#format")).select_by_value("webp")
        assert page.find("#copy-markdown").get_attribute("value") == (
            f"![Blue hour]({page.base}/image/{image_id}.webp?w=640)")
        page.find("[data-copy='copy-markdown']").click()
        page.wait_text("[data-copy='copy-markdown']", "Copied")
        page.no_csp_violations()

        page.fill("#edit-form #description", "Blue hour, edited")
        page.find("#vis-private").click()
        page.find("#save").click()
        # The old page's h1 may still be there for a moment: wait for the new one's text.
        page.wait_text("h1", "Blue hour, edited")
        assert page.title() == "Blue hour, edited"
        page.no_csp_violations()

        page.driver.delete_all_cookies()  # now a logged-out browser
        page.open(f"/i/{image_id}")
        assert page.title() == "Page not found"
        assert "Blue hour" not in page.driver.page_source

        page.login()
        page.open(f"/i/{image_id}")
        page.find("#delete").click()
        page.wait("#confirm-delete")
        page.click_to_next_page("#confirm-delete")  # the image page has an h1 too
        page.wait("h1")
        assert page.path() == "/images"
        assert not page.find_all(f"a[href='/i/{image_id}']")

    await in_browser(chromium, server, steps)


@pytest_twisted.ensureDeferred
async def test_upload_errors_show_the_servers_message(chromium, server, files):
    def steps(page: Page) -> None:
        page.login()
        result = page.upload(files["text"])
        assert "failed" in result.get_attribute("class")
        assert 'The mime type of the file is invalid ("text/plain")' in result.text

    await in_browser(chromium, server, steps)


@pytest_twisted.ensureDeferred
async def test_several_files_drop_and_paste_each_get_their_own_result(chromium, server, files):
    def steps(page: Page) -> None:
        page.login()
        page.open("/")
        page.find("#image").send_keys(f"{files['photo']}\n{files['text']}")
        page.find("#upload-button").click()
        page.wait("#uploads li.done")
        page.wait("#uploads li.failed")
        assert len(page.find_all("#uploads li")) == 2
        assert "notes.txt" in page.find("#uploads li.failed").text
        # A file dropped on the zone, then one pasted from the clipboard.
        for event in ("drop", "paste"):
            page.driver.execute_async_script("""
                const [event, done] = [arguments[0], arguments[arguments.length - 1]];
                const canvas = document.createElement('canvas');
                canvas.width = 40; canvas.height = 30;
                canvas.getContext('2d').fillRect(0, 0, 40, 30);
                canvas.toBlob(blob => {
                  const data = new DataTransfer();
                  data.items.add(new File([blob], event + '.png', {type: 'image/png'}));
                  const e = event === 'drop'
                    ? new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true})
                    : new ClipboardEvent('paste', {clipboardData: data, bubbles: true,
                                                   cancelable: true});
                  (event === 'drop' ? document.getElementById('drop-zone') : document)
                    .dispatchEvent(e);
                  done();
                }, 'image/png');""", event)
            page.wait_text("#uploads li:first-child", f"{event}.png")
            page.wait("#uploads li:first-child.done")
        page.open("/images")
        assert len(page.find_all(".tile")) == 3

    await in_browser(chromium, server, steps)


@pytest_twisted.ensureDeferred
async def test_guest_uploads_follow_the_admin_toggle(chromium, server, files):
    def toggle(page: Page, on: bool) -> None:
        page.login()
        page.open("/admin")
        box = page.find("#allowGuestUploads")
        if box.is_selected() != on:
            box.click()
        page.find("#save-settings").click()
        page.wait("[role=status]")
        page.logout()

    def steps(page: Page) -> None:
        page.open("/")
        assert not page.find_all("#upload-form")
        assert page.find("main a[href='/login']")
        toggle(page, True)
        result = page.upload(files["photo"])
        assert "done" in result.get_attribute("class"), result.text
        # Turned off while a guest has the form open: the server refuses, and says so.
        api(page.base, "POST", "/api/settings", {
            "category": "access", "settings": {"allowGuestUploads": False}},
            token=_admin_token(page.base))
        page.find("#image").send_keys(str(files["wide"]))
        page.find("#upload-button").click()
        assert "Guest uploads are disabled." in page.wait("#uploads li.failed").text
        toggle(page, True)
        toggle(page, False)
        page.open("/")
        assert not page.find_all("#upload-form")

    await in_browser(chromium, server, steps)


@pytest_twisted.ensureDeferred
async def test_create_an_api_key_and_download_the_sharex_config(chromium, server, downloads):
    (downloads / "imagehost.sxcu").unlink(missing_ok=True)

    def steps(page: Page) -> None:
        page.login()
        page.open("/account")
        page.fill("#key-name", "laptop")
        page.find("form[action='/account/keys'] button").click()
        key = page.wait("#new-key").text
        assert key.startswith("sk_") and len(key) == 67
        assert "laptop" in page.find("table").text
        page.find("#sharex").click()
        deadline = time.monotonic() + 20
        while not (downloads / "imagehost.sxcu").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        config = json.loads((downloads / "imagehost.sxcu").read_text())
        assert config["RequestURL"] == f"{page.base}/api/external/upload"
        assert config["Headers"]["Authorization"].startswith("Bearer sk_")
        page.open("/account")
        assert "ShareX" in page.find("table").text

    await in_browser(chromium, server, steps)


@pytest_twisted.ensureDeferred
async def test_sign_up_when_registration_is_on(chromium, server):
    def steps(page: Page) -> None:
        page.open("/signup")
        assert page.title() == "Page not found"
        api(page.base, "POST", "/api/settings", {
            "category": "access", "settings": {"allowRegistration": True}},
            token=_admin_token(page.base))
        page.open("/login")
        page.find("main a[href='/signup']").click()
        page.fill("#username", "grace")
        page.fill("#email", "grace@example.com")
        page.fill("#password", "grace-password")
        page.fill("#confirm", "grace-password")
        page.find("form[action='/signup'] button").click()
        assert page.wait("details.menu summary").text == "grace"

    await in_browser(chromium, server, steps)


@pytest_twisted.ensureDeferred
async def test_keyboard_only_upload(chromium, server, files):
    from selenium.webdriver.common.keys import Keys

    def focused(page: Page):
        return page.driver.switch_to.active_element

    def tab_to(page: Page, css: str, limit: int = 30):
        target = page.find(css)
        from selenium.webdriver.common.action_chains import ActionChains

        for _ in range(limit):
            ActionChains(page.driver).send_keys(Keys.TAB).perform()
            if focused(page) == target:
                outline = page.driver.execute_script(
                    "return getComputedStyle(arguments[0]).outlineStyle", target)
                assert outline != "none", f"{css} has no visible focus"
                return target
        raise AssertionError(f"Tab never reached {css}")

    def press(page: Page, keys: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(page.driver).send_keys(keys).perform()

    def steps(page: Page) -> None:
        page.open("/login")
        page.find("#username").send_keys(ADMIN[0], Keys.TAB, ADMIN[1], Keys.ENTER)
        page.wait("details.menu summary")
        page.open("/")
        page.find("body").click()
        tab_to(page, "#image").send_keys(str(files["wide"]))  # what the file dialog does
        tab_to(page, "#description")
        press(page, "Typed by keyboard")
        tab_to(page, "#isPublic")
        press(page, Keys.SPACE)
        tab_to(page, "#upload-button")
        press(page, Keys.ENTER)
        page.wait("#uploads li.done")
        tab_to(page, "#uploads li.done a")
        press(page, Keys.ENTER)
        page.wait("#copy-direct")
        assert page.title() == "Typed by keyboard"
        assert "Public" in page.find(".facts").text

    await in_browser(chromium, server, steps)


@pytest_twisted.ensureDeferred
async def test_album_upload_into_reorder_share_with_a_password_and_unlock(chromium, server,
                                                                         files):
    def order(page: Page) -> list[str]:
        return [t.get_attribute("data-id") for t in page.find_all("#album-grid .tile")]

    def steps(page: Page) -> None:
        from selenium.webdriver.support.ui import Select, WebDriverWait

        page.login()
        page.open("/albums")
        page.fill("#album-title", "Holiday")
        page.click_to_next_page("#create-album")
        page.wait("h1")
        assert page.title() == "Holiday" and page.path().startswith("/a/")
        album_path = page.path()
        album_id = album_path.removeprefix("/a/")
        page.no_csp_violations()

        # Upload into it: the album page's link preselects it on the upload page.
        page.find(f"a[href='/?album={album_id}']").click()
        page.wait("#albumId")
        assert Select(page.find("#albumId")).first_selected_option.get_attribute(
            "value") == album_id
        for name in ("photo", "wide"):
            page.find("#image").send_keys(str(files[name]))
            page.find("#upload-button").click()
            WebDriverWait(page.driver, 20).until(
                lambda d, n=name: len(page.find_all("#uploads li.done")) == (
                    1 if n == "photo" else 2))
        page.no_csp_violations()
        page.open(album_path)
        first, second = order(page)

        # Drag the second tile before the first (the page's script saves the order).
        page.driver.execute_script("""
            const grid = document.getElementById('album-grid');
            const [a, b] = grid.children, dt = new DataTransfer();
            b.dispatchEvent(new DragEvent('dragstart', {bubbles: true, dataTransfer: dt}));
            a.dispatchEvent(new DragEvent('dragover',
                {bubbles: true, cancelable: true, dataTransfer: dt}));
            b.dispatchEvent(new DragEvent('dragend', {bubbles: true, dataTransfer: dt}));
        """)
        WebDriverWait(page.driver, 10).until(
            lambda d: page.find("#album-grid").get_attribute("data-saved") == "yes")
        page.open(album_path)
        assert order(page) == [second, first]
        # The arrow buttons do the same without the script.
        page.click_to_next_page(f"#album-grid .tile[data-id='{first}'] button[value='up']")
        page.wait("#album-grid")
        assert order(page) == [first, second]

        page.fill("#share-password", "open sesame")
        page.find("#create-share").click()
        link = page.wait("#share-link").get_attribute("value")
        page.no_csp_violations()

        page.driver.delete_all_cookies()  # a logged-out visitor with the link
        page.driver.get(link)
        page.wait("#unlock-form")
        assert page.title() == "Password required"
        assert "og:image" not in page.driver.page_source
        assert not page.find_all("img")
        page.fill("#share-password", "wrong")
        page.find("#unlock-form button").click()
        page.wait("#unlock-error")
        page.fill("#share-password", "open sesame")
        page.find("#unlock-form button").click()
        page.wait("#shared-grid")
        assert page.title() == "Holiday"
        thumbs = page.find_all("#shared-grid img")
        assert len(thumbs) == 2
        WebDriverWait(page.driver, 20).until(lambda d: all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", t)
            for t in thumbs))
        assert first not in page.driver.page_source  # no image id leaks from the share
        page.no_csp_violations()

    await in_browser(chromium, server, steps)


def _visit_every_page(page: Page, files, check) -> None:
    """Call ``check(page, name)`` on every page, as a visitor and as an administrator."""
    token = _admin_token(page.base)
    api(page.base, "POST", "/api/settings", {
        "category": "access", "settings": {"allowRegistration": True}}, token=token)
    # Another user, so that /admin shows the forms that manage one (disable, delete).
    api(page.base, "POST", "/api/admin/users", {
        "username": "someone-with-a-long-name", "email": "someone@example.com",
        "password": "someone-password"}, token=token)
    for path in ("/", "/login", "/signup", "/explore", "/no-such-page"):
        page.open(path)
        check(page, path)
    page.login()
    result = page.upload(files["photo"], "A photo")
    image_id = result.find_element("css selector", "a").get_attribute("href").rsplit("/")[-1]
    check(page, "/ after an upload")
    for path in ("/images", f"/i/{image_id}", f"/i/{image_id}/delete", "/account", "/admin",
                 "/explore"):
        page.open(path)
        check(page, path)
    token = _admin_token(page.base)
    album = api(page.base, "POST", "/api/albums", {"title": "Every page"}, token=token)
    api(page.base, "POST", f"/api/album/{album['id']}/images", {"imageIds": [image_id]},
        token=token)
    shared = api(page.base, "POST", "/api/shares", {"albumId": album["id"]}, token=token)
    locked = api(page.base, "POST", "/api/shares", {"imageId": image_id, "password": "pw"},
                 token=token)
    for path in ("/albums", f"/a/{album['id']}", shared["url"], locked["url"]):
        page.open(path)
        check(page, path)


@pytest_twisted.ensureDeferred
async def test_axe_finds_nothing_serious_on_any_page_light_or_dark(chromium, server, files):
    found: dict[str, list[str]] = {}

    def check(page: Page, name: str) -> None:
        for scheme in ("light", "dark"):
            color_scheme(page.driver, scheme)
            problems = axe_violations(page.driver)
            if problems:
                found[f"{name} ({scheme})"] = problems
        color_scheme(page.driver, "light")
        page.no_csp_violations()

    def steps(page: Page) -> None:
        # axe does see problems: the login page with its labels taken away.
        page.open("/login")
        page.driver.execute_script("document.querySelectorAll('label').forEach(l => l.remove())")
        assert any(v.startswith("label (critical)") for v in axe_violations(page.driver))
        _visit_every_page(page, files, check)

    await in_browser(chromium, server, steps)
    assert found == {}


@pytest_twisted.ensureDeferred
async def test_every_page_fits_360_768_and_1280_pixels(chromium, server, files):
    overflowing: dict[str, int] = {}

    def check(page: Page, name: str) -> None:
        for width in (360, 768, 1280):
            page.driver.set_window_size(width, 900)
            scroll = page.driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth")
            if scroll > 0:
                overflowing[f"{name} at {width}"] = scroll
            assert page.find("header .brand").is_displayed()
        page.driver.set_window_size(1280, 900)

    await in_browser(chromium, server, lambda page: _visit_every_page(page, files, check))
    assert overflowing == {}


@pytest_twisted.ensureDeferred
async def test_light_and_dark_follow_prefers_color_scheme(chromium, server):
    def steps(page: Page) -> tuple[str, str]:
        page.open("/login")
        light = page.driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        color_scheme(page.driver, "dark")
        dark = page.driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        return light, dark

    light, dark = await in_browser(chromium, server, steps)
    assert light == "rgb(250, 250, 250)" and dark == "rgb(19, 20, 23)"
