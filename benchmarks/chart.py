"""Draw docs/benchmarks-contended.png from benchmarks/results/*.json.

``python -m benchmarks.chart`` (needs matplotlib: ``pip install -e .[bench]``).
Contended successful claims per second against the number of racing
processes, the library beside the raw statement, one colour per database.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .harness import RESULTS

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks-contended.png"
COLOURS = {"mariadb": "#1f77b4", "postgresql": "#2ca02c", "sqlite": "#d62728", "mysql": "#9467bd"}


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.8), dpi=120)
    drawn = 0
    for path in sorted(RESULTS.glob("*.json")):
        if path.stem.endswith("-quick"):
            continue
        document = json.loads(path.read_text())
        levels = document["benchmarks"].get("contended", {})
        if not levels:
            continue
        db = document["db"]
        processes = sorted(int(p) for p in levels)
        for kind, style in (("library", "-o"), ("raw", "--s")):
            rates = [levels[str(p)][kind]["successful_claims_per_s"]["median"] for p in processes]
            axes.plot(processes, rates, style, color=COLOURS.get(db, "gray"), label=f"{db} {kind}")
        drawn += 1
    if not drawn:
        print("no full results in benchmarks/results; run python -m benchmarks first")
        return 1
    axes.set_xscale("log", base=2)
    axes.set_xticks([1, 2, 4, 8, 16, 32], labels=["1", "2", "4", "8", "16", "32"])
    axes.set_xlabel("processes racing on each tick (max_run = processes / 2, at least 1)")
    axes.set_ylabel("successful claims per second")
    axes.set_title("Contended claims: worksync_sa (solid) beside the raw statement (dashed)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    OUT.parent.mkdir(exist_ok=True)
    figure.savefig(OUT)
    print(f"written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
