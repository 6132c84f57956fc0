"""The web page at ``/`` in a real browser: headless Chromium (Debian's ``chromium`` package,
never a downloaded one) driven by Playwright, against a real uvicorn server on a free loopback
port serving the bundled ``resnet_cpu:lfw-celeba`` with MTCNN. The page takes the key, verifies
two LFW photos (one picked, one dropped), shows a problem's ``detail``, enrols, lists, identifies
and removes. Screenshots go to ``$FACENET_ARTIFACTS`` (else the test's folder); the path is
printed. Skipped, with the reason, without chromium, playwright or the LFW photos; a quick test
checks without a browser that the page is public and the API is not."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from facenet.serve.app import create_app
from facenet.serve.keys import KeyStore
from facenet.serve.settings import ServeSettings

MODEL = "resnet_cpu:lfw-celeba"  # bundled: nothing to download
TIMEOUT_MS = 60_000  # CPU inference on 2 busy cores


def chromium_executable() -> str:
    """Debian's chromium (``$FACENET_CHROMIUM`` to choose another); skips when there is none."""
    for candidate in (os.environ.get("FACENET_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):  # fmt: skip
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no chromium executable (apt-get install chromium; never `playwright install`)")


def test_the_page_is_public_and_the_api_is_not(server):
    """``/`` and its files answer without a key, outside the API's description; the API and a
    file that is not there still need one."""
    page = server.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in page.text
    for name in ("app.js", "style.css"):
        assert server.client.get(f"/static/{name}").status_code == 200
    assert server.client.get("/static/missing.js").status_code == 401
    assert server.client.get("/v1/gallery/identities").status_code == 401
    assert "/" not in server.client.get("/openapi.json").json()["paths"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live(tmp_path: Path):
    """(url, read key, write key): the app served by uvicorn in a thread on a fresh gallery."""
    uvicorn = pytest.importorskip("uvicorn", reason="facenet serve needs uvicorn")
    with KeyStore(tmp_path / "keys.sqlite") as store:
        read, write = store.create("read")[1], store.create("write")[1]
    settings = ServeSettings(
        model=MODEL, gallery=str(tmp_path / "gallery"), keys=str(tmp_path / "keys.sqlite")
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", read, write
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    root = os.environ.get("FACENET_ARTIFACTS")
    out = Path(root) / "browser" if root else tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {out}")
    return out


@pytest.fixture
def page(tmp_path: Path):
    playwright_sync = pytest.importorskip(
        "playwright.sync_api", reason="the browser test needs playwright (the 'test' extra)"
    )
    executable = chromium_executable()
    with playwright_sync.sync_playwright() as p:
        try:
            browser = p.chromium.launch(
                executable_path=executable, headless=True, args=["--no-sandbox"]
            )
        except playwright_sync.Error as e:
            pytest.skip(f"chromium at {executable} does not start under playwright: {e}")
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("dialog", lambda d: d.accept())  # the remove button's confirm()
        yield pg
        browser.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


def drop_file(page, zone: str, path: Path) -> None:
    """Drag and drop ``path`` onto the drop zone ``zone`` (a CSS selector), as a user would."""
    page.evaluate(
        """([zone, name, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "image/jpeg" }));
            const target = document.querySelector(zone);
            target.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true }));
            target.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true }));
        }""",
        [zone, path.name, base64.b64encode(path.read_bytes()).decode()],
    )


@pytest.mark.slow
@pytest.mark.data
def test_the_page_verifies_enrols_identifies_and_removes(lfw_dir: Path, live, page, shots):
    url, read, write = live
    photos = lfw_dir / "lfw-deepfunneled"
    aaron = [photos / "Aaron_Peirsol" / f"Aaron_Peirsol_000{i}.jpg" for i in (1, 2, 3)]
    bush = photos / "George_W_Bush" / "George_W_Bush_0001.jpg"

    page.goto(url + "/")
    page.wait_for_selector("#model:has-text('enrolled')")
    assert "resnet_cpu" in page.inner_text("#model")
    assert page.is_visible("#key-form")
    page.screenshot(path=shots / "1-key.png", full_page=True)

    # the key, kept for the tab: it survives a reload
    page.fill("#key-input", read)
    page.click("#key-save")
    assert page.is_hidden("#key-form")
    page.reload()
    assert page.is_hidden("#key-form")
    assert page.evaluate("sessionStorage.getItem('facenet.api_key')") == read

    # verify: one photo chosen, the other dropped
    page.set_input_files("#verify-a", aaron[0])
    drop_file(page, ".drop[data-input=verify-b]", aaron[1])
    page.wait_for_selector("#verify-run:not([disabled])")
    page.click("#verify-run")
    page.wait_for_selector("#verify-result:not([hidden])")
    assert page.inner_text("#verify-verdict") == "Same person"
    assert page.get_attribute("#verify-verdict", "class") == "verdict same"
    distance = float(page.inner_text("#verify-distance").split()[0])
    threshold = float(page.inner_text("#verify-threshold").split(":")[0])
    assert 0.0 <= distance <= threshold
    assert "far_1e-3" in page.inner_text("#verify-op")
    for side in ("a", "b"):  # the photo is drawn, with a green box over the face
        assert page.is_visible(f"#verify-{side}-canvas")
        assert page.evaluate(f"""(() => {{
            const c = document.getElementById('verify-{side}-canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 0; i < d.length; i += 4)
                if (d[i] === 0x16 && d[i + 1] === 0x80 && d[i + 2] === 0x3c) return true;
            return false;
        }})()""")
    page.screenshot(path=shots / "2-verify-same.png", full_page=True)

    page.set_input_files("#verify-b", bush)
    page.click("#verify-run")
    page.wait_for_selector("#verify-result:not([hidden])")
    assert page.inner_text("#verify-verdict") == "Different people"
    page.screenshot(path=shots / "3-verify-different.png", full_page=True)

    # the gallery with a read key: the problem's detail is shown
    page.click("[data-tab=gallery]")
    page.wait_for_selector("#gallery-rows:has-text('nobody enrolled yet')")
    page.fill("#enrol-name", "Aaron Peirsol")
    page.set_input_files("#enrol-files", aaron[:2])
    page.click("#enrol-run")
    page.wait_for_selector("#enrol-error:not([hidden])")
    assert "this needs 'write'" in page.inner_text("#enrol-error")
    page.screenshot(path=shots / "4-enrol-forbidden.png", full_page=True)

    # a write key: enrol two people
    page.click("#key-change")
    page.fill("#key-input", write)
    page.click("#key-save")
    page.click("#enrol-run")
    page.wait_for_selector("#enrol-result:not([hidden])")
    assert "Aaron Peirsol: 2 faces added" in page.inner_text("#enrol-result")
    assert page.is_hidden("#enrol-error")
    page.fill("#enrol-name", "George W Bush")
    page.set_input_files("#enrol-files", bush)
    page.click("#enrol-run")
    page.wait_for_selector("#enrol-result:has-text('George W Bush: 1 face added')")
    page.wait_for_selector("#gallery-range:has-text('1\u20132 of 2')")
    rows = page.locator("#gallery-rows tr")
    assert rows.count() == 2
    assert rows.nth(0).locator("td").nth(0).inner_text() == "Aaron Peirsol"
    assert rows.nth(0).locator("td").nth(1).inner_text() == "2"
    page.screenshot(path=shots / "5-gallery.png", full_page=True)

    # identify a third photo of one of them
    page.click("[data-tab=identify]")
    page.set_input_files("#identify-file", aaron[2])
    page.wait_for_selector("#identify-run:not([disabled])")
    page.click("#identify-run")
    page.wait_for_selector("#identify-result:not([hidden])")
    names = page.locator("#identify-faces .face-name").all_inner_texts()
    assert names[0] == "Aaron Peirsol", names
    assert "nearest: Aaron Peirsol" in page.inner_text("#identify-faces li >> nth=0")
    assert page.is_visible("#identify-canvas")
    page.screenshot(path=shots / "6-identify.png", full_page=True)

    # remove one (the confirm() is accepted)
    page.click("[data-tab=gallery]")
    page.wait_for_selector("#gallery-range:has-text('of 2')")
    page.locator("#gallery-rows tr", has_text="George W Bush").locator("button.remove").click()
    page.wait_for_selector("#gallery-range:has-text('1\u20131 of 1')")
    assert "removed George W Bush (1 face)" in page.inner_text("#enrol-result")
    assert page.locator("#gallery-rows tr").all_inner_texts()[0].startswith("Aaron Peirsol")
    page.screenshot(path=shots / "7-removed.png", full_page=True)

    # one photo of Aaron Peirsol: his photos open from the count, each with its remove button
    page.locator("#gallery-rows tr", has_text="Aaron Peirsol").locator("button.photos").click()
    photos = page.locator("ul.photos li")
    photos.first.wait_for()
    assert photos.count() == 2 and "(1 face)" in photos.nth(1).inner_text()
    page.screenshot(path=shots / "8-photos.png", full_page=True)
    photos.nth(1).locator("button.remove-image").click()
    page.wait_for_selector("#enrol-result:has-text('removed photo')")
    assert "of Aaron Peirsol" in page.inner_text("#enrol-result")
    page.wait_for_selector("ul.photos", state="detached")  # the listing was made anew
    first = page.locator("#gallery-rows tr").nth(0).locator("td")
    assert first.nth(0).inner_text() == "Aaron Peirsol" and first.nth(1).inner_text() == "1"

    # forgetting the key asks for it again; an API call without it shows the 401's detail
    page.click("#key-forget")
    assert page.is_visible("#key-form")
    page.click("#gallery-refresh")
    page.wait_for_selector("#gallery-error:not([hidden])")
    assert "API key" in page.inner_text("#gallery-error")
