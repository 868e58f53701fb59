#!/bin/sh
# Best effort: Debian's Chromium for the web dashboard's browser tests (Playwright drives it;
# it never downloads a browser of its own). Installs it with apt when it is missing and apt
# can run (root); otherwise says so, and those tests skip. Never fails the caller.
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's chromium for the browser tests (apt-get)..." >&2
    if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
        >/dev/null 2>&1; then
        exit 0
    fi
fi
echo "No chromium (apt-get install chromium): the web dashboard's browser tests will skip." >&2
exit 0
