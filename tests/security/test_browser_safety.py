"""What a visitor's browser does: no remote fetches from untrusted text, exports kept nowhere.

Row 7 of the scoping issue and row 5 of part two, watched in a real Chromium.
"""

from __future__ import annotations

import http.server
import json
import threading

import httpx
import pytest

from tests.helpers.browser import send, set_slider, wait_until_done

pytestmark = pytest.mark.browser


class Remote:
    """A 'remote' web server on another port that counts what browsers ask it for."""

    def __init__(self):
        self.hits: list[str] = []
        remote = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server API)
                remote.hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def remote():
    r = Remote()
    yield r
    r.close()


@pytest.fixture
def visitor(browser, public_app):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(public_app.url)
    page.wait_for_selector("#message textarea")
    yield page
    context.close()


def test_pages_carry_a_content_security_policy(public_app):
    policy = httpx.get(public_app.url, timeout=30).headers.get("content-security-policy", "")
    assert "img-src 'self' data: blob:" in policy and "media-src" in policy


def test_untrusted_text_never_makes_the_browser_fetch(visitor, remote, tmp_path):
    seen = []
    visitor.on("request", lambda req: seen.append(req.url))
    # A message with a markdown image and an HTML image.
    set_slider(visitor, "max_new_tokens", 4)
    send(
        visitor,
        f"look ![a]({remote.base}/message.png) and <img src='{remote.base}/html.png'> "
        f"<video src='{remote.base}/video.mp4'></video>",
    )
    wait_until_done(visitor)
    # A persona card whose greeting carries an image.
    card = {
        "spec": "chara_card_v2",
        "data": {"name": "Painter", "first_mes": f"Hi! ![me]({remote.base}/greeting.png)"},
    }
    path = tmp_path / "painter.json"
    path.write_text(json.dumps(card), encoding="utf-8")
    visitor.get_by_role("tab", name="Personas").click()
    with visitor.expect_file_chooser() as chooser:
        visitor.locator("#persona-import").click()
    chooser.value.set_files(str(path))
    visitor.get_by_role("tab", name="Chat").click()
    visitor.wait_for_function(
        "document.querySelector('#chatbot').innerText.includes('Hi!')", timeout=15000
    )
    # The image became a link the visitor may follow or not.
    assert visitor.locator(f"#chatbot a[href='{remote.base}/greeting.png']").count() == 1
    # Even an image that slipped into the page would be blocked by the policy.
    visitor.evaluate(
        "(src) => { const i = document.createElement('img'); i.id = 'injected';"
        " i.onerror = () => { i.dataset.refused = 'yes'; }; i.src = src;"
        " document.body.appendChild(i); }",
        f"{remote.base}/injected.png",
    )
    visitor.wait_for_selector("#injected[data-refused=yes]", state="attached")  # CSP blocked it
    assert remote.hits == []
    assert not [u for u in seen if u.startswith(remote.base) and "injected" not in u]


def test_exports_are_made_in_the_browser_and_kept_nowhere(visitor, public_app):
    set_slider(visitor, "max_new_tokens", 4)
    send(visitor, "Say hello.")
    wait_until_done(visitor)
    before = {p for p in public_app.data_dir.rglob("*") if p.is_file()}
    with visitor.expect_download() as download:
        visitor.locator("#export").click()
    assert download.value.url.startswith("blob:")  # never a server URL another session could use
    data = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert data["messages"][0]["content"] == "Say hello."
    after = {p for p in public_app.data_dir.rglob("*") if p.is_file()}
    assert not [p for p in after - before if "chroma" not in p.parts]
