"""The web dashboard in a real browser (Debian's Chromium, through Playwright) against a real
server (`python -m backend.serve`, as `make run` starts it) holding the sample data.

One server and one browser for the module; each test opens a fresh browser context (its own
localStorage). The last test stops and restarts the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support import wait_until
from tests.web_dashboard.pages import (
    DESKTOP,
    PHONE,
    SCREENSHOTS,
    Site,
    Watch,
    chromium_missing,
    launch,
    new_page,
    records,
    web_site,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing())),
]

WAIT_MS = 20_000  # bounds on waiting, never expectations of speed
HASHED = re.compile(r"\.[0-9a-f]{12}\.(js|css|svg)$")
# What Chromium itself logs while the server is away (the page's own code logs nothing).
NETWORK_FAILURE = re.compile(r"ERR_CONNECTION_REFUSED|WebSocket connection to .* failed")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with web_site(tmp_path_factory.mktemp("web-dashboard")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[tuple[Page, Watch]]:
    context, opened, watch = new_page(browser, site)
    yield opened, watch
    context.close()


def assert_clean(watch: Watch, *, allowed: re.Pattern[str] | None = None) -> None:
    errors = [e for e in watch.errors if allowed is None or not allowed.search(e)]
    assert errors == []
    assert watch.foreign_requests() == []
    assert watch.most_reads_open <= 1  # the server runs one read per token at once


def sign_in_by_bookmark(page: Page, site: Site) -> None:
    page.goto(f"/?token={site.token}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


def static_paths(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', html)


# --- HTTP: the page's headers and files -------------------------------------------------


def test_the_page_has_a_strict_content_security_policy(site: Site) -> None:
    answer = httpx.get(f"{site.url}/", timeout=30)
    policy = dict(
        (directive.split()[0], directive.split()[1:])
        for directive in answer.headers["Content-Security-Policy"].split(";")
        if directive.strip()
    )

    assert answer.status_code == 200
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    host = f"127.0.0.1:{site.server.port}"
    assert policy["connect-src"] == ["'self'", f"ws://{host}", f"wss://{host}"]
    assert "unsafe" not in answer.headers["Content-Security-Policy"]
    assert "*" not in answer.headers["Content-Security-Policy"]
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    # Nothing inline that the policy would have to allow.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", answer.text) == []
    assert " style=" not in answer.text
    assert "<style" not in answer.text


def test_static_files_have_hashed_names_and_a_long_cache(site: Site) -> None:
    html = httpx.get(f"{site.url}/", timeout=30).text
    paths = static_paths(html)
    answers = {path: httpx.get(f"{site.url}{path}", timeout=30) for path in paths}
    module = next(
        answer.text for path, answer in answers.items() if path.endswith(".js") and "/app." in path
    )

    assert len(paths) == 5  # icon, two stylesheets, uPlot and the module
    assert [path for path in paths if not HASHED.search(path)] == []
    assert {path: answer.status_code for path, answer in answers.items()} == dict.fromkeys(
        paths, 200
    )
    for answer in answers.values():
        assert "immutable" in answer.headers["Cache-Control"]
        assert "max-age=315360000" in answer.headers["Cache-Control"]
    # The module's own import names the hashed file too.
    assert re.search(r'from "\./format\.[0-9a-f]{12}\.js"', module)


def test_the_page_and_its_files_are_not_counted_by_the_api_throttles(site: Site) -> None:
    # More than the anonymous limit (60 a minute): the page and WhiteNoise's files are not
    # API requests, and nothing of them is throttled or needs a token.
    html = httpx.get(f"{site.url}/", timeout=30).text
    paths = ["/", *static_paths(html)] * 13

    with httpx.Client(base_url=site.url, timeout=30) as client:
        statuses = {client.get(path).status_code for path in paths}

    assert len(paths) > 60
    assert statuses == {200}


def test_other_paths_still_answer_the_api_404(site: Site) -> None:
    answer = httpx.get(f"{site.url}/no-such-page/", timeout=30)

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "NOT_FOUND"


# --- the browser ---------------------------------------------------------------------


def test_signing_in_with_the_token_shows_the_totals_and_then_new_ones_live(
    page: tuple[Page, Watch], site: Site
) -> None:
    tab, watch = page
    tab.goto("/")
    expect(tab.get_by_label("API token")).to_be_visible()
    tab.get_by_label("API token").fill(site.token)
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)

    site.ingest(records("first", 3))
    expect_totals_of(tab, site)
    site.ingest(records("second", 2))
    expect_totals_of(tab, site)

    assert tab.evaluate("localStorage.getItem('claude-usage.token')") == site.token
    assert_clean(watch)


def expect_totals_of(tab: Page, site: Site) -> None:
    summary = site.get("dashboard/").json()["summary"]
    expect(tab.locator("#total-tokens")).to_have_attribute(
        "title", f"{summary['total_tokens']:,}", timeout=WAIT_MS
    )
    expect(tab.locator("#total-messages")).to_have_text(f"{summary['total_messages']:,}")
    expect(tab.locator("#total-cost")).to_have_text(f"${summary['total_cost_usd']:,.2f}")


def test_a_bookmark_signs_in_and_the_token_leaves_the_address_bar_and_the_log(
    page: tuple[Page, Watch], site: Site
) -> None:
    tab, watch = page
    sign_in_by_bookmark(page=tab, site=site)

    expect(tab).to_have_url(f"{site.url}/")
    assert tab.evaluate("localStorage.getItem('claude-usage.token')") == site.token
    wait_until(lambda: "/?token=[redacted]" in site.server.log_tail(10**7), "the page's log line")
    assert site.token not in site.server.log_path.read_text(errors="replace")
    assert_clean(watch)


def test_signing_out_forgets_the_token(page: tuple[Page, Watch], site: Site) -> None:
    tab, watch = page
    sign_in_by_bookmark(page=tab, site=site)

    tab.get_by_role("button", name="Sign out").click()

    expect(tab.get_by_label("API token")).to_be_visible()
    expect(tab.locator("#dashboard")).to_be_hidden()
    assert tab.evaluate("localStorage.getItem('claude-usage.token')") is None
    tab.reload()
    expect(tab.get_by_label("API token")).to_be_visible()
    assert_clean(watch)


def test_a_refused_token_asks_again(page: tuple[Page, Watch], site: Site) -> None:
    tab, watch = page
    tab.goto("/?token=not-a-real-token")

    expect(tab.locator("#sign-in-error")).to_have_text("The server refused this token.")
    expect(tab.get_by_label("API token")).to_be_visible()
    assert_clean(watch)


def test_the_countdown_to_the_reset_moves_every_second(
    page: tuple[Page, Watch], site: Site
) -> None:
    tab, watch = page
    sign_in_by_bookmark(page=tab, site=site)
    countdown = tab.locator("#reset-value")
    expect(countdown).to_have_text(re.compile(r"^(\d+h )?\d+m \d\ds$"))

    expect(countdown).not_to_have_text(countdown.text_content() or "", timeout=2500)
    assert_clean(watch)


def test_the_settings_reach_the_server_and_survive_a_reload(
    page: tuple[Page, Watch], site: Site
) -> None:
    tab, watch = page
    sign_in_by_bookmark(page=tab, site=site)
    tab.locator("summary").click()

    tab.get_by_label("Plan", exact=True).select_option("max20")
    tab.get_by_label("Token limit per 5-hour window").fill("123456")
    tab.get_by_label("Token limit per 5-hour window").press("Tab")

    expect(tab.locator("#tokens-bar-label")).to_contain_text("of 123,456 (Max 20x plan)")
    tab.reload()
    expect(tab.locator("#tokens-bar-label")).to_contain_text(
        "of 123,456 (Max 20x plan)", timeout=WAIT_MS
    )
    expect(tab.get_by_label("Plan", exact=True)).to_have_value("max20")
    assert_clean(watch)


def test_the_chart_and_the_tables_show_the_samples(page: tuple[Page, Watch], site: Site) -> None:
    tab, watch = page
    sign_in_by_bookmark(page=tab, site=site)
    projects = site.get("projects/").json()["projects"]

    expect(tab.locator("#chart canvas")).to_be_visible(timeout=WAIT_MS)
    expect(tab.locator("#projects-table tbody tr")).to_have_count(len(projects), timeout=WAIT_MS)
    tab.get_by_role("button", name="rest-api").click()
    sessions = site.get("projects/rest-api/sessions/").json()["sessions"]
    rows = tab.locator("#sessions-table tbody tr")
    expect(rows).to_have_count(len(sessions), timeout=WAIT_MS)
    tab.locator("#sessions-table").get_by_role("button", name="Messages").click()
    # Sorted by messages: the first click sorts the most first.
    most = max(sessions, key=lambda session: session["total_messages"])
    expect(rows.first.locator("th")).to_have_attribute("title", most["session_id"])
    expect(tab.locator("#hosts-table")).to_contain_text("samples")
    assert_clean(watch)


def test_every_width_fits_and_the_screenshots_are_taken(browser: Browser, site: Site) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        for scheme in ("light", "dark"):
            context, tab, watch = new_page(browser, site, viewport=viewport, scheme=scheme)
            sign_in_by_bookmark(page=tab, site=site)
            expect(tab.locator("#chart canvas")).to_be_visible(timeout=WAIT_MS)
            expect(tab.locator("#projects-table tbody tr").first).to_be_visible(timeout=WAIT_MS)
            expect(tab.locator("#hosts-table")).to_contain_text("samples", timeout=WAIT_MS)

            width, inner = tab.evaluate("[document.documentElement.scrollWidth, innerWidth]")
            tab.screenshot(path=SCREENSHOTS / f"web-dashboard-{name}-{scheme}.png", full_page=True)
            context.close()
            assert width <= inner, f"{name} {scheme}: {width} px wide in {inner}"
            assert_clean(watch)


def test_reconnecting_shows_while_the_server_is_away_and_clears_when_it_returns(
    page: tuple[Page, Watch], site: Site
) -> None:
    tab, watch = page
    sign_in_by_bookmark(page=tab, site=site)
    connection = tab.locator("#connection")
    # Stopped in the middle of a read, the server would keep that read's slot for its lease
    # (usage.api.throttles.SLOT_LEASE_SECONDS) and refuse the page's next read with a 429:
    # not what this test is about.
    for _ in range(200):
        if watch.reads_open == 0:
            break
        tab.wait_for_timeout(50)

    site.server.stop()
    expect(connection).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    expect(connection).to_contain_text("Reconnecting")
    site.server.start()  # the same port and database: a new process
    expect(connection).to_have_attribute("data-state", "live", timeout=30_000)
    expect(connection).to_have_text("Live")

    assert_clean(watch, allowed=NETWORK_FAILURE)
