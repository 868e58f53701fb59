"""What the web dashboard's browser tests and its screenshot script share: Debian's Chromium
(never a browser Playwright downloads), a real server with the sample data, and a record of
what a page did (console errors, requests, REST reads at once)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Request

from tests.support import API, REPO, ServerProcess, drop_keys, manage, server_env

CHROMIUM = Path(os.environ.get("USAGE_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO / "var" / "screenshots"  # git-ignored, like all of var/
USER = "web"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return (
            f"no Chromium at {CHROMIUM}: install Debian's (apt-get install chromium, as "
            "tests/web_dashboard/ensure_chromium.sh does) to run the web dashboard's tests"
        )
    return None


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM))


@dataclass
class Site:
    server: ServerProcess
    token: str

    @property
    def url(self) -> str:
        return self.server.url

    def get(self, path: str) -> httpx.Response:
        headers = {"Authorization": f"Token {self.token}"}
        return httpx.get(f"{self.url}{API}{path}", headers=headers, timeout=30)

    def ingest(self, lines: bytes) -> dict[str, object]:
        answer = httpx.post(
            f"{self.url}{API}events/",
            content=lines,
            headers={
                "Authorization": f"Token {self.token}",
                "Content-Type": "application/x-ndjson",
                "X-Usage-Host": "browser-test",
            },
            timeout=30,
        )
        answer.raise_for_status()
        result: dict[str, object] = answer.json()
        return result


@contextlib.contextmanager
def web_site(workdir: Path, *, samples: bool = True) -> Iterator[Site]:
    """A server as `make run` starts it (`python -m backend.serve`, which collects the
    static files), on a SQLite file of its own and the suite's Redis under a prefix of its
    own; the sample tree moved to now when ``samples``."""
    prefix = f"web{uuid.uuid4().hex[:12]}"
    env = server_env(workdir, prefix)
    manage(env, "migrate", "--noinput", "-v0")
    token = manage(env, "create_token", USER).strip()
    if samples:
        manage(env, "load_samples", "--shift-to-now", "--user", USER)
    server = ServerProcess(env, workdir / "server.log", workers=1)
    server.start()
    try:
        yield Site(server=server, token=token)
    finally:
        server.stop()
        drop_keys(prefix)


def records(tag: str, count: int, *, now: datetime | None = None) -> bytes:
    """``count`` Claude Code assistant lines of a session of their own, a minute apart."""
    moment = now or datetime.now(tz=UTC)
    lines = [
        {
            "type": "assistant",
            "timestamp": (moment - timedelta(minutes=index + 1)).isoformat().replace("+00:00", "Z"),
            "sessionId": f"browser-{tag}",
            "cwd": "/home/dev/browser-test",
            "requestId": f"req_{tag}_{index}",
            "message": {
                "id": f"msg_{tag}_{index}",
                "model": "claude-sonnet-4-20250514",
                "usage": {"input_tokens": 1200 + index, "output_tokens": 345 + index},
            },
        }
        for index in range(count)
    ]
    return b"\n".join(orjson.dumps(line) for line in lines)


@dataclass
class Watch:
    """What a page did: its console errors, uncaught exceptions, every request's address,
    and the most REST reads it had open at once."""

    origin: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    reads_open: int = 0
    most_reads_open: int = 0

    def attach(self, page: Page) -> None:
        page.on("console", lambda message: self._console(message.type, message.text))
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("request", self._started)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)
        page.on("websocket", lambda socket: self.requests.append(socket.url))

    def _console(self, kind: str, text: str) -> None:
        if kind == "error":
            self.errors.append(text)

    def _started(self, request: Request) -> None:
        self.requests.append(request.url)
        if _is_read(request):
            self.reads_open += 1
            self.most_reads_open = max(self.most_reads_open, self.reads_open)

    def _ended(self, request: Request) -> None:
        if _is_read(request):
            self.reads_open -= 1

    def foreign_requests(self) -> list[str]:
        """Requests (WebSockets too) to anything but the server's own host and port."""
        own = urlsplit(self.origin).netloc
        return [url for url in self.requests if urlsplit(url).netloc != own]


def _is_read(request: Request) -> bool:
    return API in request.url and request.method == "GET"


def new_page(
    browser: Browser, site: Site, *, viewport: dict[str, int] = DESKTOP, scheme: str = "light"
) -> tuple[BrowserContext, Page, Watch]:
    context = browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]
        color_scheme=scheme,  # type: ignore[arg-type]
        locale="en-US",
        base_url=site.url,
    )
    page = context.new_page()
    watch = Watch(origin=site.url)
    watch.attach(page)
    return context, page, watch
