"""`tmt serve` in a real browser: the test starts the server as a subprocess on a free
127.0.0.1 port with the session's tiny trained model and vocoder, and drives Debian's headless
Chromium with Playwright (the Python package, pointed at /usr/bin/chromium: browser downloads
are not possible here). On the page it uploads an image and sees a caption, uploads a wav and
gets a wav back (a round trip through text), and types a caption and sees an image.

The screenshot goes to the test's tmp_path; with TMT_UPDATE_SCREENSHOT=1 it replaces
docs/img/serve.png (the one the README shows).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "img" / "serve.png"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.geteuid() == 0:
        pytest.fail("chromium is missing; `make test` installs it (make sysdeps: apt-get install -y chromium)")
    pytest.skip("chromium is not installed and we are not root to install it: sudo apt-get install -y chromium")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tiny_pipeline: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`tmt serve` on a free local port; yields its base URL."""
    pytest.importorskip("fastapi")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "tmt", "serve", "-m", str(tiny_pipeline.exp), "--vocoder",
           str(tiny_pipeline.vocoder), "--port", str(port), "--threads", "1"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"tmt serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"tmt serve did not answer within 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode in (0, -15), log_path.read_text()[-3000:]
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]


@pytest.fixture(scope="module")
def media(tiny_pipeline: Any) -> dict[str, Any]:
    from tmt.store.manifest import media_path, read_manifest

    man = tiny_pipeline.manifests["test"]
    row = next(r for r in read_manifest(man, split="test") if r.get("speech") and r.get("image") and r.get("text"))
    return {"text": row["text"], "speech": media_path(man, row["speech"]), "image": media_path(man, row["image"])}


def test_the_page_in_a_real_browser(server: str, media: dict[str, Any], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = _chromium()
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 860})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(server + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert "directions" in (page.text_content("#model") or "")

            # upload a wav and get a wav back (speech -> text -> speech)
            page.click("#src-tabs button[data-src=speech]")
            page.set_input_files("#speech-file", str(media["speech"]))
            page.click("#tgt-seg button[data-tgt=image]")
            page.select_option("#via", "text")
            page.click("#tgt-seg button[data-tgt=speech]")
            page.click("#translate")
            audio = page.wait_for_selector("#result-speech", timeout=120_000)
            assert audio is not None and (audio.get_attribute("src") or "").startswith("data:audio/wav;base64,")
            page.wait_for_function("document.getElementById('result-speech').readyState >= 1", timeout=30_000)
            assert page.eval_on_selector("#result-speech", "a => a.duration") > 0
            assert page.is_visible("#result .pivot")

            # upload an image and see a caption
            page.select_option("#via", "")
            page.click("#src-tabs button[data-src=image]")
            page.set_input_files("#image-file", str(media["image"]))
            page.wait_for_selector("#image-preview img")
            page.click("#tgt-seg button[data-tgt=text]")
            page.click("#translate")
            caption = page.wait_for_selector("#result-text", timeout=120_000)
            assert caption is not None and (caption.text_content() or "").strip()

            # type a caption and see an image
            page.click("#src-tabs button[data-src=text]")
            page.fill("#text-input", media["text"])
            page.click("#tgt-seg button[data-tgt=image]")
            page.click("#translate")
            img = page.wait_for_selector("#result-image", timeout=120_000)
            assert img is not None and (img.get_attribute("src") or "").startswith("data:image/png;base64,")
            page.wait_for_function("document.getElementById('result-image').naturalWidth > 0", timeout=30_000)

            # the history keeps all three, newest first; no error on the way
            dirs = page.eval_on_selector_all("#history li .dir", "els => els.map(e => e.firstChild.textContent)")
            assert dirs == ["text → image", "image → text", "speech → speech"]
            assert not (page.text_content("#status") or "").startswith(("4", "5"))
            shot = SCREENSHOT if os.environ.get("TMT_UPDATE_SCREENSHOT") == "1" else tmp_path / "serve.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    assert not errors, errors
