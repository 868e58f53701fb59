"""``python -m tests.web_dashboard.screenshot [PATH]``: the README's picture of the web
dashboard (docs/web-dashboard.png by default): a server of its own with the sample data
moved to now, Debian's Chromium at 1000 px, light colours.

Needs what the browser tests need: Redis (REDIS_URL, or the embedded server it starts
under var/) and /usr/bin/chromium.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tests.support import REPO

OUTPUT = REPO / "docs" / "web-dashboard.png"
VIEWPORT = {"width": 1000, "height": 1470}
WAIT_MS = 30_000


def main(argv: list[str]) -> int:
    output = Path(argv[0]) if argv else OUTPUT
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    os.environ.setdefault("USAGE_PROFILE", "local")  # the embedded defaults, as make run
    from backend.embedded_redis import ensure_redis_url, ensure_var_dir

    ensure_var_dir()
    ensure_redis_url()  # before the settings load, as the entry points do
    import django

    django.setup()
    from playwright.sync_api import expect, sync_playwright

    from tests.web_dashboard.pages import chromium_missing, launch, new_page, web_site

    if reason := chromium_missing():
        print(reason, file=sys.stderr)
        return 1
    with (
        tempfile.TemporaryDirectory() as workdir,
        web_site(Path(workdir)) as site,
        sync_playwright() as playwright,
    ):
        browser = launch(playwright)
        context, page, _watch = new_page(browser, site, viewport=VIEWPORT)
        page.goto(f"/?token={site.token}")
        expect(page.locator("#chart canvas")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#hosts-table")).to_contain_text("samples", timeout=WAIT_MS)
        output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=output)  # the viewport: cards, models and the chart
        context.close()
        browser.close()
    print(f"{output}: {output.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
