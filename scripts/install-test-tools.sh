#!/usr/bin/env bash
# Installs the servers the integration tests start on loopback. Idempotent; run as root (CI does).
#
#   rclone   Debian package `rclone`: `rclone serve webdav` is the HTTP source's server
#            (object_store's HTTP store lists with WebDAV PROPFIND, Depth: infinity).
# The S3 API server needs nothing installed: it is the s3s-fs crate, in process.
set -euo pipefail

if ! command -v rclone >/dev/null 2>&1; then
    if ! apt-cache show rclone >/dev/null 2>&1; then
        apt-get update
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rclone
fi
echo "rclone: $(command -v rclone)"
