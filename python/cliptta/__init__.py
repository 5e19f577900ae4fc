"""cliptta: CLIP test-time adaptation over image lakes, as Arrow streams.

The Rust core of the ``cliptta`` command line and DataFusion table function, from Python.
Results are Arrow record batches streamed as the model adapts, readable by pyarrow, Polars
and DuckDB without copies.

>>> import cliptta, pyarrow as pa
>>> reader = cliptta.label("data/lake/images", ["t-shirt", "trouser", "bag"], method="zero_shot")
>>> table = reader.read_all()
>>> table.num_rows
1000
>>> sorted(set(table.column("status").to_pylist()))
['ok']
"""

from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa

from cliptta import _cliptta

__version__: str = _cliptta.__version__

__all__ = ["label", "retain_freed_memory", "__version__"]


def retain_freed_memory() -> bool:
    """Configure the process's malloc for adaptation, as the ``cliptta`` command does.

    glibc's malloc returns the large activation blocks of every batch to the kernel and spreads
    threads over several arenas; this keeps one arena and the freed blocks for the next batch.
    It changes the whole process, so call it yourself, once, before labelling. Returns whether
    it applied (only glibc has these settings; ``CLIPTTA_RETAIN_FREED_MEMORY=0`` opts out).

    >>> import cliptta
    >>> isinstance(cliptta.retain_freed_memory(), bool)
    True
    """
    return _cliptta.retain_freed_memory()


def label(location: str, classes: Sequence[str] | str, method: str = "cliptta", **options: Any) -> pa.RecordBatchReader:
    """Label every image under ``location`` with ``classes``, adapting with ``method``.

    ``location`` is a local path or a ``file://``, ``s3://``, ``gs://``, ``az://``,
    ``http(s)://`` or ``memory://`` URL, optionally ending in a glob (``photos/*.jpg``).
    ``classes`` is a list of class names (or one comma-separated string). ``method`` is
    ``"zero_shot"``, ``"tent"``, ``"cliptta"``, ``"tda"``, ``"unient"`` or ``"sar"``.

    The keyword arguments are the options of the SQL table function, with the same names,
    defaults and validation: ``model``, ``open_set``, ``adapt_batch_size``, ``steps``, ``lr``,
    ``seed``, ``order``, ``device``, ``guard``, ... (README, "Options"), and the object-store
    keys (``aws_endpoint="http://127.0.0.1:9000"``, ``aws_region``, ``allow_http``, ...).

    Returns a :class:`pyarrow.RecordBatchReader` over one row per listed object, in listing
    order: ``location``, ``size``, then ``label``, ``label_id``, ``confidence``,
    ``ood_score``, ``is_ood``, ``status`` and ``error`` (a row that could not be read or decoded
    has its status and no label). The model adapts as the batches are read; the work runs
    with the GIL released.

    Raises :class:`ValueError` for an unknown or invalid option (the message names it),
    :class:`FileNotFoundError` for a local location that does not exist and :class:`OSError`
    for a store that cannot be read.

    >>> import cliptta
    >>> cliptta.label("data/lake/images", ["bag"], steps=-1)
    Traceback (most recent call last):
    ...
    ValueError: ...steps...
    """
    return pa.RecordBatchReader.from_stream(_cliptta.label(location, classes, method, **options))
