"""
Branch coverage per app, from the data a test run left: `scripts/test` prints it at the end.

    .venv/bin/python scripts/coverage_by_app.py [COVERAGE_FILE]

Lines and branches count together, as coverage.py's own total does; the gateway processes the
tests start are measured too (`[tool.coverage.run] patch = ["subprocess"]`).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import coverage


def by_app(data_file: str | None) -> dict[str, list[int]]:
    """app -> [statements, covered statements, branches, covered branches]."""
    cov = coverage.Coverage(data_file=data_file, messages=False)
    cov.load()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "coverage.json"
        cov.json_report(outfile=str(report), ignore_errors=True)
        files = json.loads(report.read_text())["files"]
    apps: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for name, measured in files.items():
        parts = Path(name).parts
        app = parts[0] if len(parts) > 1 else "(top level)"
        summary = measured["summary"]
        totals = apps[app]
        totals[0] += summary["num_statements"]
        totals[1] += summary["covered_lines"]
        totals[2] += summary.get("num_branches", 0)
        totals[3] += summary.get("covered_branches", 0)
    return dict(sorted(apps.items()))


def percent(covered: int, total: int) -> str:
    return f"{100 * covered / total:5.1f}%" if total else "   - "


def main() -> None:
    try:
        apps = by_app(sys.argv[1] if len(sys.argv) > 1 else None)
    except coverage.exceptions.NoDataError:
        print("No coverage data (no test ran, or --no-cov).")
        return
    print(f"{'app':<16}{'lines':>14}{'branches':>14}{'cover':>8}")
    grand = [0, 0, 0, 0]
    for app, (lines, lines_hit, branches, branches_hit) in apps.items():
        grand = [
            a + b for a, b in zip(grand, (lines, lines_hit, branches, branches_hit), strict=True)
        ]
        print(
            f"{app:<16}{lines_hit:>6}/{lines:<7}{branches_hit:>6}/{branches:<7}"
            f"{percent(lines_hit + branches_hit, lines + branches):>8}"
        )
    lines, lines_hit, branches, branches_hit = grand
    print(
        f"{'total':<16}{lines_hit:>6}/{lines:<7}{branches_hit:>6}/{branches:<7}"
        f"{percent(lines_hit + branches_hit, lines + branches):>8}"
    )


if __name__ == "__main__":
    main()
