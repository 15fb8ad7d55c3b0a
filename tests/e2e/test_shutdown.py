"""SIGTERM stops a service with exit code 0 also while it still waits for its dependencies."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from shared.embedded import free_port

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("service", ["scheduler", "ticker", "acker"])
async def test_sigterm_while_dependencies_are_unreachable(service: str) -> None:
    nothing = free_port()  # nobody listens here
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "run",
        service,
        env={
            **os.environ,
            "CHIME_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{nothing}",
            "CHIME_DATABASE_URL": f"postgresql://chime@127.0.0.1:{nothing}/chime",
            "CHIME_HTTP_PORT": "0",
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 60
    while b"retrying with backoff" not in seen:  # it is in its startup retry loop
        assert time.monotonic() < deadline, seen.decode()[-2000:]
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert line, f"{service} exited on its own: {seen.decode()[-2000:]}"
        seen += line
    proc.send_signal(signal.SIGTERM)
    rest = await asyncio.wait_for(proc.stderr.read(), 20)
    assert await proc.wait() == 0, (seen + rest).decode()[-2000:]
    assert b"Traceback" not in seen + rest
