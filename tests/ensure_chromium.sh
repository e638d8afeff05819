#!/bin/sh
# Installs Debian's chromium + chromedriver for the search-page browser test when they are
# missing and we may (root, apt-get present). Never fails: without them that test skips.
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: chromium missing and cannot install it here (needs root and apt-get); the browser test will skip" >&2
    exit 0
fi
echo "ensure_chromium: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
    echo "ensure_chromium: apt-get could not install chromium; the browser test will skip" >&2
fi
exit 0
