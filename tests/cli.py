"""Running the `chime` command as a user would, in tests."""

from __future__ import annotations

import asyncio
import os
import sys


async def run_chime(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `chime ARGS` with `env` on top of this environment."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()
