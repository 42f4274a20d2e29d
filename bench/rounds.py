"""Side-by-side load rounds: every server gets the same load, in alternating order, repeatedly."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .load import LoadGenerator, LoadResult
from .server import Server


@dataclass(frozen=True)
class Contender:
    name: str
    server: Server
    path: str
    # A wrk script that makes the requests (a POST); GETs of `path` without one.
    script: Path | None = None

    @property
    def url(self) -> str:
        return f"{self.server.url}{self.path}"


@dataclass(frozen=True)
class Round:
    load: LoadResult
    server_cpu_seconds: float

    @property
    def rps(self) -> float:
        return self.load.rps

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_seconds / max(self.load.requests, 1) * 1e6


@dataclass(frozen=True)
class Runs:
    """One contender's rounds, in order; round i of two contenders ran back to back."""

    name: str
    rounds: list[Round]

    @property
    def results(self) -> list[LoadResult]:
        return [r.load for r in self.rounds]

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.results)

    @property
    def rps_range(self) -> tuple[float, float]:
        return min(r.rps for r in self.results), max(r.rps for r in self.results)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.results)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.results)

    @property
    def cpu_us_per_request(self) -> float:
        """The server's CPU time per request: steadier than req/s when the machine is shared."""
        return statistics.median(r.cpu_us_per_request for r in self.rounds)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.results)


@dataclass(frozen=True)
class Ratio:
    """Median, min and max over rounds of a/b, each round's pair measured back to back."""

    median: float
    low: float
    high: float

    @classmethod
    def of_throughput(cls, a: Runs, b: Runs) -> Ratio:
        return cls.of([x.rps / y.rps for x, y in zip(a.results, b.results, strict=True)])

    @classmethod
    def of_cpu_efficiency(cls, a: Runs, b: Runs) -> Ratio:
        """b's CPU time per request over a's: the throughput ratio that CPU cost alone predicts."""
        return cls.of(
            [
                y.cpu_us_per_request / x.cpu_us_per_request
                for x, y in zip(a.rounds, b.rounds, strict=True)
            ]
        )

    @classmethod
    def of_p99(cls, a: Runs, b: Runs) -> Ratio:
        return cls.of([x.p99_ms / y.p99_ms for x, y in zip(a.results, b.results, strict=True)])

    @classmethod
    def of(cls, values: Sequence[float]) -> Ratio:
        return cls(statistics.median(values), min(values), max(values))


def alternate(
    contenders: Sequence[Contender],
    load: LoadGenerator,
    *,
    rounds: int,
    seconds: float,
    warmup_seconds: float,
    pause_seconds: float = 0,
) -> dict[str, Runs]:
    """Warms each server up, then runs `rounds` rounds, reversing the order every other round.

    After each server's turn comes a pause of `pause_seconds`: what a server still does once its
    load stops (a traced one sends its last batch of spans) is then not done in the next one's turn.
    """
    for contender in contenders:
        load.run(contender.url, warmup_seconds, contender.script)
    results: dict[str, list[Round]] = {c.name: [] for c in contenders}
    for index in range(rounds):
        order = contenders if index % 2 == 0 else list(reversed(contenders))
        for contender in order:
            cpu_before = contender.server.cpu_seconds()
            result = load.run(contender.url, seconds, contender.script)
            cpu = contender.server.cpu_seconds() - cpu_before
            results[contender.name].append(Round(result, cpu))
            time.sleep(pause_seconds)
    return {name: Runs(name, runs) for name, runs in results.items()}
