"""Labels the demo lake with `cliptta.label` and prints the rows and images per second, to set
beside `cliptta label` on the same lake (BENCHMARKS.md, "From Python"). Run from the repository
root under `/usr/bin/time -v` for the peak RSS:

    python python/examples/bench_label.py cliptta [--system-malloc]
"""

import sys
import time

import cliptta

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def main() -> None:
    method = sys.argv[1] if len(sys.argv) > 1 else "cliptta"
    # As the command line does at start (`--system-malloc` leaves malloc as it is).
    if "--system-malloc" not in sys.argv:
        cliptta.retain_freed_memory()
    options = {"adapt_batch_size": 64}
    if method == "cliptta":
        options["open_set"] = True
    start = time.perf_counter()
    rows = sum(batch.num_rows for batch in cliptta.label("data/demo/images", CLASSES, method=method, **options))
    seconds = time.perf_counter() - start
    print(f"{method}: {rows} rows in {seconds:.2f} s, {rows / seconds:.1f} images/s")


if __name__ == "__main__":
    main()
