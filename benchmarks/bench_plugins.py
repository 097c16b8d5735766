"""Wall time of `cvml plugins` against `python -c "import tensorflow"`, same interpreter.

Run: python benchmarks/bench_plugins.py [repeats]   (in an environment with plugins installed)
Listing plugins must not import TensorFlow, so it should cost a small fraction of that import.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def wall(args: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    listed = subprocess.run(
        [sys.executable, "-m", "cvml_core", "plugins"], check=True, capture_output=True, text=True
    )
    print(listed.stdout.strip())
    cases = {
        "cvml plugins": [sys.executable, "-m", "cvml_core", "plugins"],
        "import tensorflow": [sys.executable, "-c", "import tensorflow"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    medians = {}
    for name, args in cases.items():
        times = wall(args, repeats)
        medians[name] = statistics.median(times)
        print(f"{name:18s} median {medians[name]:.3f} s  (min {min(times):.3f}, n={repeats})")
    ratio = medians["cvml plugins"] / medians["import tensorflow"]
    print(f"ratio cvml plugins / import tensorflow = {ratio:.3f}")


if __name__ == "__main__":
    main()
