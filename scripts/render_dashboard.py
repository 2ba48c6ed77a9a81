"""
Render the Grafana dashboard's panels (observability/grafana/llmapi.json) from a real
Prometheus into a PNG, for the README (Grafana itself is not packaged for Debian).

Every panel's PromQL runs through Prometheus' HTTP API (query_range) over the last minutes;
Grafana's `$__rate_interval` and `$model` variables get fixed values.

    python scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 \\
        --minutes 10 --out docs/screenshots/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import FuncFormatter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "observability" / "grafana" / "llmapi.json"
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#b877d9", "#f2495c", "#8ab8ff", "#96d98d"]
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    answer = httpx.get(
        f"{prometheus.rstrip('/')}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": step},
        timeout=30,
    ).json()
    if answer.get("status") != "success":
        raise SystemExit(f"Prometheus refused {expr!r}: {answer.get('error')}")
    return answer["data"]["result"]


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or "value"


def format_value(unit: str):
    def fmt(value: float, _position: float) -> str:
        if unit == "s":
            return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.1f} s"
        if unit == "reqps":
            return f"{value:.1f}/s" if value < 100 else f"{value:.0f}/s"
        return f"{value:.0f}" if abs(value) >= 10 or value == 0 else f"{value:.2f}"

    return FuncFormatter(fmt)


def render(prometheus: str, minutes: float, out: Path, rate_interval: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    end = time.time()
    start = end - minutes * 60
    step = max(1.0, minutes * 60 / 240)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    figure = plt.figure(figsize=(16, rows * 0.42), facecolor=BACKGROUND)
    figure.suptitle(
        f"{dashboard['title']}: last {minutes:g} minutes, from {prometheus}",
        color=TEXT,
        fontsize=14,
        x=0.01,
        ha="left",
    )
    grid = figure.add_gridspec(rows, 24, hspace=2.4, wspace=0.9, top=0.97, bottom=0.02)
    for panel in panels:
        pos = panel["gridPos"]
        axes = figure.add_subplot(
            grid[pos["y"] + 1 : pos["y"] + pos["h"], pos["x"] : pos["x"] + pos["w"]]
        )
        axes.set_facecolor(PANEL)
        axes.set_title(panel["title"], color=TEXT, fontsize=11, loc="left")
        defaults = panel["fieldConfig"]["defaults"]
        unit = defaults.get("unit", "short")
        color_index = 0
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", rate_interval).replace("$model", ".*")
            for series in query_range(prometheus, expr, start, end, step):
                points = [
                    (float(t), float(v))
                    for t, v in series["values"]
                    if not math.isnan(float(v)) and not math.isinf(float(v))
                ]
                if not points:
                    continue
                xs = [(t - end) / 60 for t, _ in points]
                ys = [v for _, v in points]
                axes.plot(
                    xs,
                    ys,
                    color=COLORS[color_index % len(COLORS)],
                    linewidth=1.6,
                    label=legend(target.get("legendFormat", ""), series["metric"]),
                )
                color_index += 1
        for step_ in defaults.get("thresholds", {}).get("steps", []):
            if step_["color"] == "red" and step_["value"] is not None:
                axes.axhline(step_["value"], color="#f2495c", linestyle="--", linewidth=1.2)
                axes.axhspan(step_["value"], axes.get_ylim()[1] or 1, color="#f2495c", alpha=0.08)
        axes.yaxis.set_major_formatter(format_value(unit))
        axes.set_xlim(-minutes, 0)
        axes.tick_params(colors=TEXT, labelsize=8)
        axes.grid(color=GRID, linewidth=0.6)
        for spine in axes.spines.values():
            spine.set_color(GRID)
        axes.set_xlabel("minutes ago", color=TEXT, fontsize=8)
        if color_index:
            axes.legend(
                fontsize=7, facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, loc="upper left"
            )
        else:
            axes.text(0.5, 0.5, "no data", color=TEXT, ha="center", transform=axes.transAxes)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80, facecolor=BACKGROUND)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--minutes", type=float, default=10, help="time range to show")
    parser.add_argument("--rate-interval", default="1m", help="value for $__rate_interval")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "dashboard.png")
    args = parser.parse_args()
    render(args.prometheus, args.minutes, args.out, args.rate_interval)


if __name__ == "__main__":
    main()
