"""The load generator: wrk when installed, else a small asyncio client (said in the report)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

WRK_SCRIPT = Path(__file__).with_name("wrk_summary.lua")


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

    def run(self, url: str, seconds: float) -> LoadResult:
        wrk = self.wrk
        if wrk:
            command = [
                wrk,
                "-t1",
                f"-c{self.connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "5s",
                "-s",
                str(WRK_SCRIPT),
                url,
            ]
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
