"""Run the guest in QEMU with the device behind ``x-pci-proxy-dev``.

:class:`QemuGuest` starts one QEMU process: TCG, the ``pc`` machine, 256 MiB of guest RAM in a
shared memfd (``memory-backend-memfd,share=on`` plus a NUMA node that uses it, so that QEMU can
hand the RAM to the device process), the serial console on stdout, and the proxy device with
one end of a fresh unix socket pair. The other end is returned to the caller, who serves it
with a :class:`~sim.linux.proxy.ProxyServer`: in a thread for a Python device
(:func:`run_guest`), or from inside a cocotb test for the RTL (that test makes its own
:class:`QemuGuest` and awaits :meth:`ProxyServer.serve_async`).

The console is read by a thread, stripped of the firmware's terminal escapes, time-stamped,
written to ``guest.log`` in the run folder and parsed by :func:`parse_console`: the workload's
lines between :data:`~sim.linux.guest.BEGIN_MARK` and :data:`~sim.linux.guest.END_MARK` are
``CHECK PASS name: detail``, ``CHECK FAIL name: detail`` and ``INFO key: value``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sim.linux.guest import BEGIN_MARK, END_MARK, GuestImage, ensure_qemu
from sim.linux.proxy import MemoryRegion, PciDeviceBackend, ProxyServer, Request

__all__ = ["QemuGuest", "ConsoleLine", "Check", "Console", "parse_console", "GuestRun",
           "run_guest", "KERNEL_ARGS", "MEMORY_MIB", "FIRMWARE_DONE_LINE"]

log = logging.getLogger(__name__)

MEMORY_MIB = 256
KERNEL_ARGS = ("console=ttyS0", "quiet", "panic=-1",
               # TCG cannot deliver the proxy's INTx (that needs KVM's irqfd): the kernel polls
               # interrupt handlers instead, and the local APIC timer is too slow under TCG.
               "irqpoll", "nolapic_timer")
FIRMWARE_DONE_LINE = "Booting from ROM"
"""What SeaBIOS prints on the serial console when it hands over to the kernel it was given."""

_FIRMWARE_DONE = FIRMWARE_DONE_LINE.encode()
# Terminal control sequences SeaBIOS writes to the serial port (ECMA-48: CSI sequences, and
# two-character escapes such as ESC c, "reset to initial state").
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[@-~])")


@dataclasses.dataclass(frozen=True)
class ConsoleLine:
    seconds: float          # since QEMU was started
    text: str


class QemuGuest:
    """One QEMU process running the guest, its device served elsewhere through a socket.

    Parameters
    ----------
    image : GuestImage
        The prepared kernel and base initramfs.
    workload : str
        The shell script run as ``/workload.sh``.
    run_dir : Path
        Where the initrd and ``guest.log`` are written.
    kernel_args : sequence of str
        Added to :data:`KERNEL_ARGS`.
    on_line : callable, optional
        Called with each :class:`ConsoleLine` as it arrives (from the reader thread).
    """

    def __init__(self, image: GuestImage, workload: str, run_dir: Path, *,
                 kernel_args: Sequence[str] = (), memory_mib: int = MEMORY_MIB,
                 on_line: Callable[[ConsoleLine], None] | None = None):
        if memory_mib < 64:
            raise ValueError(f"the guest needs at least 64 MiB of RAM, not {memory_mib}")
        self.image = image
        self.workload = workload
        self.run_dir = Path(run_dir)
        self.kernel_args = (*KERNEL_ARGS, *kernel_args)
        self.memory_mib = memory_mib
        self.on_line = on_line
        self.lines: list[ConsoleLine] = []
        self.raw = bytearray()
        """Everything QEMU printed so far."""
        self.log_path = self.run_dir / "guest.log"
        self.command: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._started = 0.0

    def start(self) -> socket.socket:
        """Start QEMU; return our end of the device socket (QEMU holds the other)."""
        qemu = ensure_qemu()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        initrd = self.image.initrd_with_workload(self.workload, self.run_dir / "initrd.cpio.gz")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mem = f"{self.memory_mib}M"
        self.command = [
            str(qemu), "-M", "pc", "-accel", "tcg", "-smp", "1", "-m", mem,
            "-nographic", "-no-reboot", "-nic", "none", "-vga", "none",
            "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
            "-numa", "node,memdev=mem",
            "-kernel", str(self.image.kernel), "-initrd", str(initrd),
            "-append", " ".join(self.kernel_args),
            "-device", f"x-pci-proxy-dev,id=dev0,fd={theirs.fileno()}",
        ]
        log.info("starting %s", " ".join(self.command))
        self._started = time.monotonic()
        try:
            self._proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        self._reader = threading.Thread(target=self._read_console, name="qemu-console",
                                        daemon=True)
        self._reader.start()
        return ours

    def _read_console(self) -> None:
        # Raw chunks rather than lines: the firmware prints "Booting from ROM..." without a
        # newline, and the byte count tells which accesses came before it (see run_guest).
        fd = self._proc.stdout.fileno()
        pending = b""
        firmware_dots = False
        with open(self.log_path, "w") as log_file:
            while chunk := os.read(fd, 65536):
                self.raw += chunk
                pending += chunk
                if firmware_dots:
                    stripped = pending.lstrip(b".")
                    firmware_dots = not stripped
                    pending = stripped
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    self._add_line(raw, log_file)
                if _FIRMWARE_DONE in pending:
                    # After a PVH boot no newline follows: cut here (dropping the dots that
                    # may still come), so the hand-over is time-stamped when it happens and
                    # the kernel's output starts a line of its own.
                    self._add_line(pending, log_file)
                    pending, firmware_dots = b"", True
            if pending:
                self._add_line(pending, log_file)

    def _add_line(self, raw: bytes, log_file) -> None:
        text = _ESCAPES.sub("", raw.decode(errors="replace")).replace("\r", "")
        line = ConsoleLine(time.monotonic() - self._started, text)
        self.lines.append(line)
        log_file.write(f"[{line.seconds:7.2f}] {text}\n")
        log_file.flush()
        if self.on_line is not None:
            self.on_line(line)

    def output_offset(self, needle: str) -> int | None:
        """Console bytes up to the end of the first ``needle``, or None if it never came."""
        pos = bytes(self.raw).find(needle.encode())
        return None if pos < 0 else pos + len(needle)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for QEMU to exit; kill it and raise ``TimeoutError`` after ``timeout`` seconds."""
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"the guest did not power off within {timeout:.0f} s "
                               f"(console in {self.log_path})") from None
        finally:
            if self._reader is not None:
                self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.running:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._started


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclasses.dataclass
class Console:
    """What the guest reported."""
    checks: list[Check]
    info: list[tuple[str, str]]
    workload_rc: int | None         # None: the end mark never came
    begin: ConsoleLine | None
    end: ConsoleLine | None

    def info_values(self, key: str) -> list[str]:
        return [value for k, value in self.info if k == key]


_CHECK = re.compile(r"^CHECK (PASS|FAIL) ([^:]+): ?(.*)$")
_INFO = re.compile(r"^INFO ([^:]+): ?(.*)$")
_END = re.compile(re.escape(END_MARK) + r"(\d+)")


def parse_console(lines: Sequence[ConsoleLine]) -> Console:
    """Pick the workload's report out of the console (kernel messages may be interleaved)."""
    console = Console([], [], None, None, None)
    inside = False
    for line in lines:
        if line.text.startswith(BEGIN_MARK):
            inside, console.begin = True, line
            continue
        if not inside:
            continue
        end = _END.match(line.text)
        if end:
            console.workload_rc, console.end = int(end.group(1)), line
            break
        if m := _CHECK.match(line.text):
            console.checks.append(Check(m.group(2).strip(), m.group(1) == "PASS", m.group(3)))
        elif m := _INFO.match(line.text):
            console.info.append((m.group(1).strip(), m.group(2)))
    return console


@dataclasses.dataclass
class GuestRun:
    """The outcome of :func:`run_guest`."""
    exit_code: int | None
    seconds: float
    lines: list[ConsoleLine]
    console: Console
    server: ProxyServer
    accesses: list[tuple[int, Request, int]]
    """Every request the device answered: (console bytes printed by then, request, answer)."""
    firmware_done: int | None
    """Console bytes up to the end of :data:`FIRMWARE_DONE_LINE` (None: never printed)."""
    memory_map: list[MemoryRegion]
    """The last guest memory map QEMU sent."""
    log_path: Path
    error: str | None = None


def run_guest(make_backend: Callable[..., PciDeviceBackend], image: GuestImage, workload: str,
              run_dir: Path, *, kernel_args: Sequence[str] = (), timeout: float = 300.0,
              on_line: Callable[[ConsoleLine], None] | None = None) -> tuple[GuestRun, object]:
    """Boot the guest against a Python device and wait until it powers off.

    ``make_backend(memory, interrupt)`` makes the device once the server exists. The server
    runs in a thread; a failure in it (a protocol error or an exception of the device) kills
    QEMU and is reported in :attr:`GuestRun.error`. Returns the run and the backend.
    """
    guest = QemuGuest(image, workload, run_dir, kernel_args=kernel_args, on_line=on_line)
    accesses: list[tuple[int, Request, int]] = []
    sock = guest.start()
    server = ProxyServer(sock, observer=lambda req, res: accesses.append((len(guest.raw), req, res)))
    backend = make_backend(server.memory, server.interrupt)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve(backend)
        except BaseException as exc:   # reported to the caller; QEMU cannot go on without us
            log.exception("proxy server failed")
            failure.append(exc)
            guest.kill()

    thread = threading.Thread(target=serve, name="proxy-server", daemon=True)
    thread.start()
    error = None
    exit_code = None
    try:
        exit_code = guest.wait(timeout)
    except TimeoutError as exc:
        error = str(exc)
    finally:
        seconds = guest.seconds
        server.stop()
        thread.join(timeout=10)
        memory_map = server.memory.regions
        server.close()
    if failure:
        error = f"proxy server failed: {failure[0]!r}"
    run = GuestRun(exit_code, seconds, list(guest.lines), parse_console(guest.lines), server,
                   accesses, guest.output_offset(FIRMWARE_DONE_LINE), memory_map,
                   guest.log_path, error)
    return run, backend

