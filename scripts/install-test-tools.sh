#!/usr/bin/env bash
# Installs the servers the integration tests start on loopback, and the browser they render pages in. Idempotent; run as root (CI does).
#
#   rclone   Debian package `rclone`: `rclone serve webdav` is the HTTP source's server
#            (object_store's HTTP store lists with WebDAV PROPFIND, Depth: infinity).
#   chromium Debian package `chromium`: headless, it renders `cliptta report`'s page for the
#            browser checks (console, layout, screenshot pixels) of tests/it/report.rs.
# The S3 API server needs nothing installed: it is the s3s-fs crate, in process.
set -euo pipefail

updated=false
install() {
    if ! $updated && ! apt-cache show "$1" >/dev/null 2>&1; then
        apt-get update
        updated=true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$1"
}

command -v rclone >/dev/null 2>&1 || install rclone
echo "rclone: $(command -v rclone)"
command -v chromium >/dev/null 2>&1 || install chromium
# The page's text needs a font; Debian's chromium does not pull one in without recommends.
fc-list 2>/dev/null | grep -q . || install fonts-dejavu-core
echo "chromium: $(command -v chromium)"
