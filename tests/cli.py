"""Running the `chime` command as a user would, in tests."""

from __future__ import annotations

import asyncio
import os
import sys


async def start_chime(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """`chime ARGS` started with `env` on top of this environment, its output piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_chime(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `chime ARGS` with `env` on top of this environment."""
    proc = await start_chime(env, *args)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()
