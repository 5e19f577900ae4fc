#!/usr/bin/env bash
# The test command: installs the datasets the tests read (idempotent), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x scripts/install-datasets.sh ]; then
  scripts/install-datasets.sh
fi
cargo test --workspace "$@"
