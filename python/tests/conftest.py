"""Shared fixtures: the repository's lakes and the `cliptta` binary the Python results are
compared with (`$CLIPTTA_BIN`, else the dev build `scripts/test.sh` makes)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


@pytest.fixture(scope="session")
def cliptta_bin() -> Path:
    path = Path(os.environ.get("CLIPTTA_BIN", REPO / "target" / "debug" / "cliptta"))
    if not path.is_file():
        pytest.fail(f"the cliptta binary is not at {path}: build it with `cargo build` or set CLIPTTA_BIN")
    return path


@pytest.fixture(scope="session")
def lake() -> Path:
    return REPO / "data" / "lake" / "images"


@pytest.fixture
def small_lake(tmp_path: Path, lake: Path) -> Path:
    """The mixed lake's first 40 images and one file that is not an image."""
    out = tmp_path / "lake"
    out.mkdir()
    for image in sorted(lake.iterdir())[:40]:
        shutil.copy(image, out / image.name)
    (out / "broken.png").write_bytes(b"not a png")
    return out


def run_cli(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(binary), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done
