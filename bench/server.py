"""A server process under test: started pinned to one CPU, logging to a file, stopped cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

STARTUP_SECONDS = 60


def _proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"{field} missing from /proc/{pid}/status")


class Server:
    """`with Server(...) as server:` runs `command` until the block ends; stdout goes to `log`."""

    def __init__(
        self,
        name: str,
        command: Sequence[str | Path],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log: Path,
        port: int,
        cpu: int | None,
    ) -> None:
        self.name = name
        self.port = port
        self.log = log
        self._command = [str(part) for part in command]
        if cpu is not None:
            # taskset execs the command, so the pid is the server's own.
            self._command = ["taskset", "-c", str(cpu), *self._command]
        self._cwd = cwd
        self._env = dict(env)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "server not started"
        return self._process.pid

    def __enter__(self) -> Server:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                self._command,
                cwd=self._cwd,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_live()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_live(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{self.name} exited {self._process.returncode}:\n{tail}")
            try:
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /health/live in {STARTUP_SECONDS}s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)

    def processes(self) -> list[int]:
        """The server's process and its descendants: Granian serves in a worker process of its
        own, uvicorn with one worker in the process itself."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, queue = [], [self.pid]
        while queue:
            pid = queue.pop()
            found.append(pid)
            queue.extend(children.get(pid, []))
        return found

    def reset_peak_memory(self) -> int:
        """Restarts the kernel's peak-RSS count from now; returns the current RSS in bytes."""
        for pid in self.processes():
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        return sum(_proc_status_kib(pid, "VmRSS") for pid in self.processes()) * 1024

    def peak_memory(self) -> int:
        """The processes' peak RSS in bytes since start-up or the last `reset_peak_memory()`."""
        return sum(_proc_status_kib(pid, "VmHWM") for pid in self.processes()) * 1024

    def cpu_seconds(self) -> float:
        """User plus system CPU time that the server's processes have used so far."""
        total = 0
        for pid in self.processes():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # After the command name: state is field 3, so utime and stime (14, 15) sit at 11, 12.
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def log_lines(self) -> int:
        with self.log.open("rb") as log:
            return sum(1 for _ in log)
