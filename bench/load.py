"""The load generator: wrk when installed, else a small asyncio client (said in the report)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

WRK_SCRIPT = Path(__file__).with_name("wrk_summary.lua")
# POSTs a new product per request (needs wrk): see the script.
POST_PRODUCTS_SCRIPT = Path(__file__).with_name("wrk_post_products.lua")
# Each run of a script numbers its writes apart from every other run's.
_RUN_NUMBERS = itertools.count()


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class LoadGenerator:
    """Drives `connections` keep-alive connections at a URL for a fixed time, on one CPU."""

    connections: int
    cpu: int | None
    use_wrk: bool = True

    @property
    def wrk(self) -> str | None:
        return shutil.which("wrk") if self.use_wrk else None

    @property
    def name(self) -> str:
        if self.wrk:
            return "wrk"
        reason = "wrk not installed" if self.use_wrk else "wrk not used"
        return f"python asyncio client (bench/pyload.py; {reason}: slower than wrk)"

    def _pinned(self, command: list[str]) -> list[str]:
        return ["taskset", "-c", str(self.cpu), *command] if self.cpu is not None else command

    def can_run(self, script: Path | None) -> bool:
        """A script (a POST) needs wrk; the Python client sends GETs only."""
        return script is None or self.wrk is not None

    def run(self, url: str, seconds: float, script: Path | None = None) -> LoadResult:
        wrk = self.wrk
        if script is not None and not wrk:
            raise RuntimeError(f"{script.name} needs wrk")
        if wrk:
            command = [
                wrk,
                "-t1",
                f"-c{self.connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "5s",
                "-s",
                str(script or WRK_SCRIPT),
                url,
            ]
            if script is not None:
                command += ["--", str(next(_RUN_NUMBERS))]
        else:
            command = [
                sys.executable,
                "-m",
                "bench.pyload",
                url,
                "--connections",
                str(self.connections),
                "--seconds",
                str(seconds),
            ]
        output = subprocess.run(
            self._pinned(command),
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
            cwd=Path(__file__).parent.parent,
        ).stdout
        summary = json.loads(output.strip().splitlines()[-1])
        return LoadResult(
            requests=summary["requests"],
            seconds=summary["duration_us"] / 1e6,
            p50_ms=summary["p50_us"] / 1000,
            p99_ms=summary["p99_us"] / 1000,
            errors=summary["socket_errors"] + summary["status_errors"],
        )
