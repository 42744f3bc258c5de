"""Run every benchmarks/bench_*.py in turn and print their markdown sections."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

if __name__ == "__main__":
    only = sys.argv[1:]
    for script in sorted(HERE.glob("bench_*.py")):
        if only and not any(o in script.name for o in only):
            continue
        print(f"\n<!-- {script.name} -->")
        sys.stdout.flush()
        subprocess.run([sys.executable, str(script)], cwd=HERE, check=False)
