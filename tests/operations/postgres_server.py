"""A throw-away PostgreSQL server for tests: initdb in a temp directory, pg_ctl on a free port of 127.0.0.1.

Uses Debian's server binaries (``/usr/lib/postgresql/<version>/bin``, installed by ``make postgres``). As
root the server runs as the ``postgres`` user (PostgreSQL refuses to run as root). Trust authentication on
loopback only; ``fsync=off`` (a test server: speed over durability).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "tradegraph"


def server_bin() -> Path | None:
    """The newest installed server's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    bin: Path
    datadir: Path
    port: int

    @property
    def url(self) -> str:
        """libpq form (psycopg2.connect, psql)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/dagster"

    @property
    def dagster_url(self) -> str:
        """SQLAlchemy form: the driver named (SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3)."""
        return self.url.replace("postgresql://", "postgresql+psycopg2://", 1)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *args], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.datadir, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.datadir / "data"), "-U", USER, "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        opts = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.datadir / "data"), "-o", opts,
                  "-l", str(self.datadir / "server.log"), "-w", "start")
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "dagster")

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.datadir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.datadir, ignore_errors=True)


def start_server() -> Server:
    binary = server_bin()
    if binary is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb): `make postgres` installs Debian's postgresql")
    server = Server(binary, Path(tempfile.mkdtemp(prefix="tradegraph-pg-")), _free_port())
    server.start()
    return server
