"""Issue 17.3 on a public app: a visitor's documents survive a reload of the same browser,
the Documents tab says how long they are kept, and another visitor never sees them."""

import pytest

from tests.helpers.browser import ingest_in_page, open_tab, turn, wait_for_text
from tests.security.conftest import start_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def public_minute(tmp_path_factory):
    """A public app whose idle browsers keep their documents one minute."""
    app = start_app(tmp_path_factory.mktemp("public-minute"), "--host", "0.0.0.0",
                    "--session-ttl-minutes", "1")  # fmt: skip
    yield app
    app.stop()


def visit(browser, app):
    page = browser.new_context().new_page()
    page.goto(app.url)
    page.wait_for_selector("#message textarea")
    return page


def test_documents_survive_a_reload_of_the_same_browser_only(browser, public_minute, tmp_path):
    page = visit(browser, public_minute)
    for name, text in (("otters.md", "The river otters of Lake Vell eat crayfish."),
                       ("owls.md", "The snowy owls of Lake Vell nest on the ground.")):  # fmt: skip
        path = tmp_path / name
        path.write_text(f"# {name}\n\n{text}", encoding="utf-8")
        ingest_in_page(page, path)
    page.wait_for_timeout(500)
    page.reload()
    page.wait_for_selector("#message textarea")
    page.wait_for_timeout(1000)  # the page's load events have run
    open_tab(page, "Documents")
    wait_for_text(page, "#doc-list", "owls.md")
    assert "otters.md" in page.locator("#doc-list").inner_text()
    note = page.locator("#doc-kept").inner_text()
    assert "this browser" in note and "1 minutes after the last tab" in note
    open_tab(page, "Chat")
    page.locator("#use-docs input").check()
    turn(page, "What do the river otters of Lake Vell eat?", tokens=12)
    wait_for_text(page, "#sources", "otters.md")
    # Another visitor (another browser) sees none of it.
    other = visit(browser, public_minute)
    open_tab(other, "Documents")
    other.wait_for_timeout(1500)
    listing = other.locator("#doc-list").inner_text()
    assert "otters.md" not in listing and "owls.md" not in listing
    for p in (page, other):
        p.context.close()
