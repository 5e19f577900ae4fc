"""Type stubs of the extension module (``cliptta._cliptta``)."""

from typing import Any, Sequence

__version__: str

class ArrowStream:
    """Record batches of a running scan, read once through ``__arrow_c_stream__``."""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...
    def __arrow_c_schema__(self) -> object: ...

def label(location: str, classes: Sequence[str] | str, method: str = "cliptta", **options: Any) -> ArrowStream: ...
def retain_freed_memory() -> bool: ...
