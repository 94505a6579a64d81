"""A Ray head started as `ray start --head --block` for one test, and stopped by its own process ids.

`ray stop` would end every Ray process of this user on the machine (other test runs' too): instead the head runs
in a session of its own, and what it started is found by its temporary directory, which only its processes hold.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT_S = 120.0


class RayHead:
    def __init__(self, port: int, num_cpus: int = 2) -> None:
        self.port = port
        self.temp = Path(tempfile.mkdtemp(prefix="sdgraph-rh-"))  # short: Ray's socket paths must fit
        self.log = open(self.temp / "start.log", "w+")
        self.proc = subprocess.Popen(
            ["ray", "start", "--head", "--block", f"--num-cpus={num_cpus}", f"--port={self.port}",
             "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
             f"--temp-dir={self.temp}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if "Ray runtime started" in self.output():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"ray start exited:\n{self.output()}")
            time.sleep(0.2)
        raise AssertionError(f"ray start never finished:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.temp / "start.log").read_text()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the head's session, then SIGKILL to whatever of it is left, by pid."""
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pids():
            time.sleep(0.5)
        self._signal_group(signal.SIGKILL)
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)

    def pids(self) -> list[int]:
        """This head's processes: those holding a file under its temporary directory (Ray's workers leave its
        session, so the process group alone misses them)."""
        found = []
        marker = str(self.temp)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if any(marker in os.readlink(fd) for fd in (entry / "fd").iterdir()):
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours to look at
                continue
        return found

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
