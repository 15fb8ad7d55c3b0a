"""Chime services as OS processes, for end-to-end tests and benchmarks."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar

from shared.embedded import die_with_parent
from shared.settings import Settings

__all__ = ["Services", "alive", "child_processes"]


class Services:
    """Chime services as OS processes; tests may run replicas, kill and restart any of them.

    A replica is named `<service>` or `<service>-<n>` (`ticker-2`). Each process's stderr goes
    to a file in `logdir` (`logs[label]`), its health URL to `urls[label]`. Every instance is
    listed in `created`: a failing end-to-end test reports the tail of each log, a passing one
    removes them (tests/e2e/conftest.py). A benchmark, which has no such hook, passes
    `tidy=True`: a block that ends normally, its services stopped cleanly, removes them; any other
    end keeps them and names the folder on stderr.

    As a context manager (`async with Services(...) as running`), whatever still runs at the
    end of the block is stopped, however the block ends. On Linux each service also gets
    SIGTERM when the process that started it dies: a benchmark killed mid-run (or failing
    outside such a block) leaves no service behind, running on and taking CPU from the next.
    """

    created: ClassVar[list[Services]] = []

    def __init__(self, settings: Settings, *, tidy: bool = False, **env: str) -> None:
        self.env = {**os.environ, **settings.to_env(), "CHIME_HTTP_PORT": "0", **env}
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.urls: dict[str, str] = {}
        self.logs: dict[str, Path] = {}
        self.logdir = Path(tempfile.mkdtemp(prefix="chime-e2e-logs-"))
        self._drains: list[asyncio.Task[None]] = []
        self.tidy = tidy
        Services.created.append(self)

    async def __aenter__(self) -> Services:
        return self

    async def __aexit__(self, failure: type[BaseException] | None, *_: object) -> None:
        if any(proc.returncode is None for proc in self.procs.values()):
            await self.stop_all()
        if not self.tidy:
            return
        if failure is None and all(proc.returncode == 0 for proc in self.procs.values()):
            shutil.rmtree(self.logdir, ignore_errors=True)
        else:
            print(f"service logs kept in {self.logdir}", file=sys.stderr)

    async def start(self, label: str) -> None:
        service = label.split("-")[0]
        log = self.logs.setdefault(label, self.logdir / f"{label}.log")
        with log.open("ab") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.cli.main",
                "run",
                service,
                env={**self.env, "CHIME_TICKER_ID": label},
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                preexec_fn=die_with_parent,
            )
        self.procs[label] = proc
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode().strip()
            if line.startswith(f"chime {service}: http://"):
                self.urls[label] = line.split(": ", 1)[1]
            if line == f"chime {service}: ready":
                self._drains.append(asyncio.create_task(_drain(proc)))
                return
        raise AssertionError(f"{label} exited before it was ready (code {await proc.wait()})")

    def metrics(self, label: str) -> str:
        """What the instance's /metrics endpoint shows now (blocking: a short local read)."""
        with urllib.request.urlopen(f"{self.urls[label]}/metrics", timeout=5) as response:
            return response.read().decode()

    async def kill(self, label: str) -> None:
        proc = self.procs[label]
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def stop_all(self) -> dict[str, int]:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = {n: await asyncio.wait_for(p.wait(), 60) for n, p in self.procs.items()}
        for task in self._drains:
            task.cancel()
        return codes


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    async for _ in proc.stdout:
        pass


def child_processes(pid: int) -> dict[int, list[str]]:
    """The processes `pid` started (Linux), each with its command line."""
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        pids = [int(child) for child in children.read().split()]
    found = {}
    for child in pids:
        with open(f"/proc/{child}/cmdline", "rb") as cmdline:
            found[child] = cmdline.read().decode(errors="replace").rstrip("\0").split("\0")
    return found


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped is not: it has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def ended(*pids: int) -> Callable[[], Awaitable[bool]]:
    """A condition for `tests.integration.helpers.until`: none of `pids` is alive."""

    async def check() -> bool:
        return not any(alive(pid) for pid in pids)

    return check
