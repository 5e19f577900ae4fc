"""`cliptta.label`: the rows `cliptta label` writes, as a stream Arrow tools read directly."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import cliptta
from conftest import CLASSES, run_cli


@pytest.mark.parametrize("method", ["zero_shot", "tent", "cliptta"])
def test_label_gives_the_rows_of_the_command_line(cliptta_bin: Path, small_lake: Path, tmp_path: Path, method: str) -> None:
    out = tmp_path / f"{method}.parquet"
    steps = [] if method == "zero_shot" else ["--steps", "2"]
    run_cli(cliptta_bin, "label", str(small_lake), "--classes", ",".join(CLASSES), "--method", method, "--adapt-batch-size", "8", *steps, "--out", str(out), "--quiet")
    want = pq.read_table(out)
    options = {} if method == "zero_shot" else {"steps": 2}
    got = cliptta.label(str(small_lake), CLASSES, method=method, adapt_batch_size=8, **options).read_all()
    assert got.schema.names == want.schema.names
    # Row for row, in listing order, every value equal (the same model, order and seed).
    assert got.num_rows == want.num_rows == 41
    for name in want.schema.names:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


def test_every_object_is_one_row_and_bad_images_have_a_status(small_lake: Path) -> None:
    table = cliptta.label(str(small_lake), CLASSES, method="zero_shot").read_all()
    locations = table.column("location").to_pylist()
    assert len(locations) == len(set(locations)) == 41
    broken = table.filter(pa.compute.ends_with(table.column("location"), "broken.png"))
    assert broken.column("status").to_pylist() == ["decode_error"]
    assert broken.column("label").to_pylist() == [None]
    assert set(table.column("status").to_pylist()) == {"ok", "decode_error"}


def test_polars_and_duckdb_read_the_stream(small_lake: Path) -> None:
    frame = pl.from_arrow(cliptta.label(str(small_lake), CLASSES, method="zero_shot"))
    assert frame.height == 41
    relation = duckdb.from_arrow(cliptta.label(str(small_lake), CLASSES, method="zero_shot"))
    rows = relation.aggregate("status, count(*) AS n", "status").order("status").fetchall()
    assert rows == [("decode_error", 1), ("ok", 40)]


def test_option_errors_name_the_option(small_lake: Path) -> None:
    with pytest.raises(ValueError, match="steps"):
        cliptta.label(str(small_lake), CLASSES, steps="many")
    with pytest.raises(ValueError, match="no_such_option"):
        cliptta.label(str(small_lake), CLASSES, no_such_option=1)
    with pytest.raises(ValueError, match="method"):
        cliptta.label(str(small_lake), CLASSES, method="not_a_method")
    # A setting the chosen method does not have names both.
    with pytest.raises(ValueError, match="steps.*zero_shot"):
        cliptta.label(str(small_lake), CLASSES, method="zero_shot", steps=2)
    with pytest.raises(TypeError, match="adapt_batch_size"):
        cliptta.label(str(small_lake), CLASSES, adapt_batch_size={"a": 1})


def test_a_missing_location_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cliptta.label(str(tmp_path / "nowhere"), CLASSES)


def test_a_stream_is_read_once(small_lake: Path) -> None:
    stream = cliptta._cliptta.label(str(small_lake), CLASSES, "zero_shot")
    assert pa.table(stream).num_rows == 41
    with pytest.raises(RuntimeError, match="already read"):
        pa.table(stream)
