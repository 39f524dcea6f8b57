"""Run pcscd with virtual (vpcd) readers, for tests and demonstrations without hardware.

pcscd 1.9 serves one socket per machine (``/run/pcscd/pcscd.comm``), so only one pcscd can run.
:class:`PcscdService` starts it with a reader configuration of its own, or reuses a running one
that already lists the same readers, and otherwise says what is running and how to stop it.

Each configuration entry gives a vpcd reader with two slots, named
``"<name> <port> 00 00"`` and ``"<name> <port> 00 01"``; the card of slot ``s`` connects to TCP
port ``<port> + s``. The port in the name makes a reused pcscd tell its ports.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from onecard.card.reader import list_readers

DEFAULT_BASE_PORT = 28432
VPCD_DRIVER_PATHS = (
    Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so"),
    Path("/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so"),
)
PCSCD_PATHS = (Path("/usr/sbin/pcscd"), Path("/usr/local/sbin/pcscd"))
INSTALL_HINT = "on Debian: apt-get install --no-install-recommends pcscd vsmartcard-vpcd"
START_TIMEOUT = 10.0


class PcscdError(RuntimeError):
    """pcscd cannot be started or used as needed."""


def find_pcscd() -> Path | None:
    """The pcscd executable, or None if it is not installed."""
    found = shutil.which("pcscd")
    if found:
        return Path(found)
    return next((p for p in PCSCD_PATHS if p.is_file()), None)


def find_vpcd_driver() -> Path | None:
    """vsmartcard's vpcd driver library, or None if it is not installed."""
    return next((p for p in VPCD_DRIVER_PATHS if p.is_file()), None)


def running_pcscd() -> list[tuple[int, str]]:
    """(pid, command line) of every live pcscd process on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        comm, _, rest = stat.partition("(")[2].rpartition(")")
        if comm != "pcscd" or rest.split()[0] == "Z":  # zombies are no pcscd any more
            continue
        found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode().strip()))
    return found


def systemd_pcscd_socket_active() -> bool:
    """Whether systemd listens for pcscd (``pcscd.socket``) and would start the system's pcscd."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or not Path("/run/systemd/system").is_dir():
        return False
    try:
        result = subprocess.run(
            [systemctl, "is-active", "--quiet", "pcscd.socket"], timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


class PcscdService:
    """pcscd with ``readers`` vpcd reader slots listening on ``base_port`` onwards."""

    def __init__(
        self,
        conf_dir: Path | str,
        base_port: int | None = None,
        readers: int = 2,
        name: str = "onecard",
    ) -> None:
        if base_port is None:
            base_port = int(os.environ.get("ONECARD_VPCD_PORT", DEFAULT_BASE_PORT))
        if readers < 1:
            raise ValueError("at least one reader is needed")
        entries = (readers + 1) // 2
        if not 1024 <= base_port <= 65535 - 2 * entries:
            raise ValueError(f"vpcd base port {base_port} is out of range")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"reader name {name!r}: use letters, digits, '.', '_' or '-'")
        self.conf_dir = Path(conf_dir)
        self.base_port = base_port
        self.readers = readers
        self.name = name
        self.conf_file = self.conf_dir / "reader.conf"
        self.log_file = self.conf_dir / "pcscd.log"
        self.reused = False
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._names = [f"{name} {base_port + 2 * (i // 2)} 00 {i % 2:02X}" for i in range(readers)]

    def __repr__(self) -> str:
        state = (
            "reused" if self.reused else f"pid {self._process.pid}" if self._process else "stopped"
        )
        return f"PcscdService({self.name!r}, ports {self.base_port}.., {state})"

    @property
    def pid(self) -> int | None:
        """The pid of the pcscd this service started (None if it reused one or is stopped)."""
        return self._process.pid if self._process else None

    def reader_names(self) -> list[str]:
        """The names of the virtual readers, in slot order."""
        return list(self._names)

    def port_of(self, reader_name: str) -> int:
        """The TCP port a virtual card connects to for ``reader_name``."""
        if reader_name not in self._names:
            raise ValueError(
                f"{reader_name!r} is not a reader of this service ({', '.join(self._names)})"
            )
        *_, channel, _, slot = reader_name.split(" ")
        return int(channel) + int(slot, 16)

    def write_config(self) -> None:
        """Write the reader configuration (one vpcd reader, two slots, per entry)."""
        driver = find_vpcd_driver()
        if driver is None:
            raise PcscdError(f"vsmartcard's vpcd driver is not installed ({INSTALL_HINT})")
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        entries = []
        for i in range((self.readers + 1) // 2):
            channel = self.base_port + 2 * i
            library = driver
            if i > 0:
                # vpcd 3.3 keeps its sockets in static storage indexed by slot only, so two
                # readers sharing one loaded library poll the same sockets. A copy of the file is
                # loaded apart, with storage of its own.
                library = self.conf_dir / "drivers" / f"libifdvpcd-{i}.so"
                library.parent.mkdir(exist_ok=True)
                shutil.copyfile(driver, library)
            entries.append(
                f'FRIENDLYNAME "{self.name} {channel}"\n'
                f"DEVICENAME   /dev/null:0x{channel:04X}\n"
                f"LIBPATH      {library}\n"
                f"CHANNELID    0x{channel:04X}\n"
            )
        self.conf_file.write_text("\n".join(entries))

    def start(self) -> PcscdService:
        """Start pcscd (or reuse a running one that lists our readers) and wait for the readers."""
        if self._process is not None or self.reused:
            return self
        pcscd = find_pcscd()
        if pcscd is None:
            raise PcscdError(f"pcscd is not installed ({INSTALL_HINT})")
        running = running_pcscd()
        if running:
            present = list_readers()
            if all(n in present for n in self._names):
                self.reused = True
                return self
            procs = "; ".join(f"pid {pid}: {cmd}" for pid, cmd in running)
            raise PcscdError(
                f"another pcscd is running ({procs}) and does not list the readers "
                f"{', '.join(map(repr, self._names))} (it lists "
                f"{', '.join(map(repr, present)) or 'none'}). Only one pcscd can run per "
                f"machine: stop it (systemctl stop pcscd.socket pcscd.service, or kill "
                f"{' '.join(str(pid) for pid, _ in running)}) and try again"
            )
        if systemd_pcscd_socket_active():
            raise PcscdError(
                "systemd's pcscd.socket is active: a client would start the system's pcscd, "
                "which has not our readers. Only one pcscd can run per machine: stop it "
                "(systemctl stop pcscd.socket pcscd.service) and try again"
            )
        self.write_config()
        self._log = self.log_file.open("ab")
        # The configuration file, not the folder: pcscd reads every file of a folder as reader
        # configuration, its own log included.
        self._process = subprocess.Popen(
            [str(pcscd), "--foreground", "--config", str(self.conf_file)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            status = self._process.poll()
            if status is not None:
                self._close_log()
                self._process = None
                raise PcscdError(
                    f"pcscd exited with status {status} at start-up; its log "
                    f"({self.log_file}) ends:\n{self._log_tail()}"
                )
            present = list_readers()
            if all(n in present for n in self._names):
                return self
            if time.monotonic() >= deadline:
                self.stop()
                listed = ", ".join(map(repr, present)) or "none"
                raise PcscdError(
                    f"pcscd did not list the readers {', '.join(map(repr, self._names))} "
                    f"within {START_TIMEOUT:g} s (it lists {listed}); its log "
                    f"({self.log_file}) ends:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the pcscd this service started; a reused one is left running."""
        process, self._process = self._process, None
        self.reused = False
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    def __enter__(self) -> PcscdService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
