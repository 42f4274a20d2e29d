"""The results: a Markdown table (ratios first) and a PNG plot of throughput and memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .products import ExportMemory
from .project import Project
from .rounds import Ratio, Runs

MIB = 1024 * 1024


@dataclass(frozen=True)
class Row:
    measure: str
    result: str
    spread: str = ""
    target: str = ""
    verdict: str = ""


def ratio_row(measure: str, ratio: Ratio, *, at_least: float | None = None) -> Row:
    if at_least is None:
        return Row(measure, f"{ratio.median:.2f}x", f"{ratio.low:.2f}-{ratio.high:.2f}")
    verdict = "pass" if ratio.median >= at_least else "MISS"
    return Row(
        measure,
        f"{ratio.median:.2f}x",
        f"{ratio.low:.2f}-{ratio.high:.2f}",
        f">= {at_least:.2f}x",
        verdict,
    )


def p99_row(measure: str, ratio: Ratio, a_ms: float, b_ms: float, *, at_most: float) -> Row:
    """A ratio of tails, lower is better: the medians of each side's p99 beside the ratio."""
    verdict = "pass" if ratio.median <= at_most else "MISS"
    return Row(
        measure,
        f"{ratio.median:.2f}x",
        f"{ratio.low:.2f}-{ratio.high:.2f}; p99 {a_ms:.1f} ms / {b_ms:.1f} ms",
        f"<= {at_most:.2f}x",
        verdict,
    )


def missing_row(measure: str, reason: str, target: str = "") -> Row:
    return Row(measure, reason, "", target, "n/a")


@dataclass
class Report:
    title: str
    setup: list[str]
    budget: list[Row] = field(default_factory=list)
    runs: list[tuple[Runs, str]] = field(default_factory=list)
    projects: list[Project] = field(default_factory=list)
    exports: list[ExportMemory] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self, plot_name: str) -> str:
        lines = [f"# {self.title}", "", *(f"- {item}" for item in self.setup), ""]
        lines += ["## Budget", ""]
        lines += _table(
            ["Measure", "Result (median)", "Range over rounds, or detail", "Target", "Verdict"],
            [[r.measure, r.result, r.spread, r.target, r.verdict] for r in self.budget],
        )
        if self.runs:
            lines += ["", "## Servers under load", ""]
            lines += _table(
                [
                    "Server",
                    "req/s",
                    "req/s range",
                    "p50 ms",
                    "p99 ms",
                    "server CPU µs/request",
                    "errors",
                    "log lines",
                ],
                [
                    [
                        runs.name,
                        f"{runs.rps:,.0f}",
                        "{:,.0f}-{:,.0f}".format(*runs.rps_range),
                        f"{runs.p50_ms:.2f}",
                        f"{runs.p99_ms:.2f}",
                        f"{runs.cpu_us_per_request:.0f}",
                        str(runs.errors),
                        log_lines,
                    ]
                    for runs, log_lines in self.runs
                ],
            )
        lines += ["", "## Render, install and generated suite", ""]
        lines += _table(
            ["Variant", "Answers", "Render s", "Install s (uv sync)", "Suite s", "Suite"],
            [
                [
                    p.variant,
                    " ".join(f"{k}={v}" for k, v in p.answers.items()) or "(defaults)",
                    f"{p.render_seconds:.1f}",
                    f"{p.install_seconds:.1f}",
                    "" if p.suite_seconds is None else f"{p.suite_seconds:.1f}",
                    p.suite_summary,
                ]
                for p in self.projects
            ],
        )
        lines += ["", f"![Throughput and export memory]({plot_name})", ""]
        if self.notes:
            lines += ["## Notes", "", *(f"- {note}" for note in self.notes), ""]
        return "\n".join(lines)

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
        names = [runs.name for runs, _ in self.runs]
        medians = [runs.rps for runs, _ in self.runs]
        lows = [runs.rps - runs.rps_range[0] for runs, _ in self.runs]
        highs = [runs.rps_range[1] - runs.rps for runs, _ in self.runs]
        bars = left.barh(names, medians, xerr=[lows, highs], color="tab:blue", capsize=3)
        left.bar_label(bars, [f"{m:,.0f}" for m in medians], label_type="center", color="white")
        left.invert_yaxis()
        left.set_xlabel("requests per second (median, bars: range over rounds)")
        left.set_title("Throughput")
        if self.exports:
            rows = [e.rows for e in self.exports]
            right.plot(rows, [e.growth_bytes / MIB for e in self.exports], marker="o")
            right.axhline(50, color="tab:red", linestyle="--", label="budget: 50 MB")
            right.set_xscale("log")
            right.set_xticks(rows, [f"{count:,}" for count in rows])
            right.minorticks_off()
            right.set_ylim(bottom=0)
            right.set_xlabel("rows exported")
            right.set_ylabel("server peak RSS growth (MiB)")
            right.legend()
        else:
            right.text(0.5, 0.5, f"CSV export: {_missing_reason(self)}", ha="center", wrap=True)
            right.set_axis_off()
        right.set_title("CSV export memory")
        figure.suptitle(self.title)
        figure.savefig(path, dpi=100)
        plt.close(figure)


def _missing_reason(report: Report) -> str:
    for row in report.budget:
        if row.measure.startswith("CSV export") and row.verdict == "n/a":
            return row.result
    return "not measured"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(row) for row in rows)]
