"""`mlplat --help` cold start, side by side with `python -c pass` and `python -c "import mlflow"`."""
from __future__ import annotations

import sys

from _common import BIN, median, table, time_command


def main() -> None:
    py = sys.executable
    time_command([str(BIN / "mlplat"), "--help"], repeat=2)  # warm the page cache, not the interpreter
    results = {
        "python -c pass": median(time_command([py, "-c", "pass"])),
        "mlplat --help": median(time_command([str(BIN / "mlplat"), "--help"])),
        'python -c "import mlflow"': median(time_command([py, "-c", "import mlflow"], repeat=5)),
    }
    base = results["mlplat --help"]
    rows = [(name, f"{t * 1000:.0f} ms", f"{t / base:.2f}×") for name, t in results.items()]
    print("### CLI cold start (median of 10 runs; 5 for mlflow)\n")
    print(table(rows, ("command", "wall time", "vs mlplat --help")))
    mlflow_time = results['python -c "import mlflow"']
    print(f"\n`import mlflow` alone is {mlflow_time / base:.1f}× the whole `mlplat --help`.")


if __name__ == "__main__":
    main()
