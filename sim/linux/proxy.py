"""The device side of QEMU's multi-process PCI proxy (``-device x-pci-proxy-dev,fd=N``).

QEMU 7.2 can run a PCI device in another process: the ``x-pci-proxy-dev`` device forwards every
configuration-space access, every BAR access and every device reset of the guest over a unix
stream socket, shares guest RAM as memfds and hands over two eventfds for INTx. This module
speaks that protocol for a Python (or cocotb) device model.

The protocol (facts from QEMU 7.2, ``include/hw/remote/mpqemu-link.h``,
``hw/remote/mpqemu-link.c``, ``hw/remote/proxy.c``, ``hw/remote/proxy-memory-listener.c``,
``hw/remote/message.c`` and ``hw/remote/iohub.c``):

* A message is a 16-byte header ``{int cmd; size_t size;}`` (``<i4xQ``: the command, 4 bytes of
  padding, the payload size) followed by ``size`` payload bytes, at most 192 (the largest member
  of the payload union). File descriptors ride as ``SCM_RIGHTS`` ancillary data on the header
  (at most 8).
* Commands (:class:`Command`): ``SYNC_SYSMEM`` 0, ``RET`` 1, ``PCI_CFGWRITE`` 2, ``PCI_CFGREAD``
  3, ``BAR_WRITE`` 4, ``BAR_READ`` 5, ``SET_IRQFD`` 6, ``DEVICE_RESET`` 7.
* ``PCI_CFGREAD``/``PCI_CFGWRITE`` carry ``{u32 addr; u32 val; int len;}`` (``<IIi``).
* ``BAR_READ``/``BAR_WRITE`` carry ``{hwaddr addr; u64 val; unsigned size; bool memory;}``
  (``<QQI?3x``): ``addr`` is the absolute guest-physical (or I/O port) address, i.e. the BAR
  base the guest programmed plus the offset; ``memory`` is false for an I/O BAR. Sizes are 1,
  2, 4 or 8 (the proxy's region allows 1..8-byte accesses, little endian).
* ``SYNC_SYSMEM`` carries ``{hwaddr gpas[8]; u64 sizes[8]; off_t offsets[8];}`` (``<8Q8Q8q``)
  and one memfd per RAM section: section ``i`` is ``sizes[i]`` bytes of guest-physical memory at
  ``gpas[i]``, found at ``offsets[i]`` in its fd. QEMU's memory listener resends the whole map
  on every change of the guest's memory map (SeaBIOS' PAM switches cause several); the previous
  map is then void and its fds are closed.
* ``SET_IRQFD`` has no payload and two eventfds: the INTx "irqfd" (write 1 to raise the line)
  and the "resample" fd (QEMU/KVM signals it when the guest has acknowledged a level interrupt;
  a line still asserted must be raised again).
* Configuration, BAR and reset messages are answered with ``RET`` carrying a u64 (the value read,
  or anything for writes); ``SYNC_SYSMEM`` and ``SET_IRQFD`` are not answered. The proxy blocks
  the guest's vCPU until the answer comes.
* QEMU probes the device when the proxy is realized, before the guest runs: vendor, device,
  class and subsystem IDs, then for each of the six BARs and 0x28 a read, a write of all ones,
  a read and a write of the original value. A register whose size probe reads back a non-zero
  value becomes a BAR region of ``~(value & ~0xf) + 1`` bytes, always registered as 32-bit
  memory (or I/O) space: the proxy supports neither 64-bit BARs nor MSI/MSI-X.
* Under TCG, QEMU cannot connect the irqfd to the guest's interrupt controller (that path needs
  KVM), so INTx is never delivered; the guest then finds completed work by polling
  (``irqpoll``). The eventfd is still written, so the host side can count assertions.

How the server is built, so that the same loop serves a pure-Python device now and a
cocotb-simulated RTL device later:

* :class:`ProxyServer` owns the socket, the :class:`GuestMemory` map and the :class:`Interrupt`.
  It handles ``SYNC_SYSMEM`` and ``SET_IRQFD`` itself, learns the BAR bases from the
  configuration writes, turns each remaining message into a :class:`Request` and answers it.
* The device is a *backend*: :class:`PciDeviceBackend` (plain methods) or
  :class:`AsyncPciDeviceBackend` (the same methods as coroutines). What the server does for one
  request is written once, as a generator that yields the backend calls it needs
  (:meth:`ProxyServer._steps`); :meth:`ProxyServer.serve` runs it with plain calls and
  :meth:`ProxyServer.serve_async` awaits each call.
* A cocotb backend turns ``cfg_read`` into a CfgRd0 TLP on the RTL's receive stream and clocks
  the design until the completion comes back, ``bar_write`` into a MemWr TLP, and so on; while
  it clocks, it serves the RTL's MemRd/MemWr requests from :class:`GuestMemory` and turns its
  INTx messages into :meth:`Interrupt.set_level`. Its ``settle`` coroutine, awaited after each
  answer, keeps clocking until the device is idle (e.g. a doorbell's requests are done).
  Receiving the next message blocks the whole simulator: that is intended, because the RTL has
  nothing to do between two guest accesses, so simulated time only passes while a message is
  served.
"""
from __future__ import annotations

import array
import bisect
import dataclasses
import enum
import logging
import mmap
import os
import select
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from typing import Protocol

__all__ = ["Command", "HEADER", "CONF_DATA", "BAR_ACCESS", "SYNC_SYSMEM", "MAX_PAYLOAD", "MAX_FDS",
           "Message", "ProtocolError", "receive_message", "send_message", "GuestMemory",
           "GuestMemoryError", "MemoryRegion", "Interrupt", "Request", "CfgRead", "CfgWrite",
           "BarRead", "BarWrite", "DeviceReset", "PciDeviceBackend", "AsyncPciDeviceBackend",
           "BarMap", "ProxyServer"]

log = logging.getLogger(__name__)


class Command(enum.IntEnum):
    """``MPQemuCmd`` (``include/hw/remote/mpqemu-link.h``)."""
    SYNC_SYSMEM = 0
    RET = 1
    PCI_CFGWRITE = 2
    PCI_CFGREAD = 3
    BAR_WRITE = 4
    BAR_READ = 5
    SET_IRQFD = 6
    DEVICE_RESET = 7


HEADER = struct.Struct("<i4xQ")         # int cmd; (padding); size_t size
CONF_DATA = struct.Struct("<IIi")       # PciConfDataMsg: addr, val, len
BAR_ACCESS = struct.Struct("<QQI?3x")   # BarAccessMsg: addr, val, size, memory
SYNC_SYSMEM = struct.Struct("<8Q8Q8q")  # SyncSysmemMsg: gpas[8], sizes[8], offsets[8]
RET_DATA = struct.Struct("<Q")
MAX_PAYLOAD = SYNC_SYSMEM.size          # sizeof(MPQemuMsg.data)
MAX_FDS = 8                             # REMOTE_MAX_FDS


class ProtocolError(RuntimeError):
    """QEMU sent something this protocol does not allow."""


@dataclasses.dataclass
class Message:
    command: Command
    payload: bytes = b""
    fds: list[int] = dataclasses.field(default_factory=list)


def _recv_exact(sock: socket.socket, size: int, fds: list[int] | None) -> bytes | None:
    """Read exactly ``size`` bytes; collect any SCM_RIGHTS fds into ``fds``. None at EOF."""
    chunks = []
    got = 0
    ancillary = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize) if fds is not None else 0
    while got < size:
        if fds is not None:
            data, anc, flags, _ = sock.recvmsg(size - got, ancillary, socket.MSG_CMSG_CLOEXEC)
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(cdata[:len(cdata) - len(cdata) % received.itemsize])
                    fds.extend(received)
            if flags & socket.MSG_CTRUNC:
                raise ProtocolError("file descriptors were truncated (more than 8 sent?)")
        else:
            data = sock.recv(size - got)
        if not data:
            if got:
                raise ProtocolError(f"connection closed inside a message ({got} of {size} bytes)")
            return None
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def receive_message(sock: socket.socket) -> Message | None:
    """Read one message (header, payload, fds) from ``sock``; None when the peer has closed it."""
    fds: list[int] = []
    header = _recv_exact(sock, HEADER.size, fds)
    if header is None:
        return None
    try:
        cmd, size = HEADER.unpack(header)
        if size > MAX_PAYLOAD:
            raise ProtocolError(f"payload of {size} bytes announced, at most {MAX_PAYLOAD} allowed")
        try:
            command = Command(cmd)
        except ValueError:
            raise ProtocolError(f"unknown command {cmd}") from None
        payload = _recv_exact(sock, size, None) if size else b""
        if payload is None:
            raise ProtocolError("connection closed before the payload")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return Message(command, payload, fds)


def send_message(sock: socket.socket, command: Command, payload: bytes = b"",
                 fds: Sequence[int] = ()) -> None:
    """Write one message; ``fds`` go as SCM_RIGHTS with it."""
    data = HEADER.pack(int(command), len(payload)) + payload
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


# --- Guest memory -------------------------------------------------------------------------------

class GuestMemoryError(RuntimeError):
    """An access to guest-physical memory that no shared RAM section covers."""

    def __init__(self, gpa: int, length: int):
        super().__init__(f"guest-physical {gpa:#x}+{length:#x} is not in shared guest RAM")
        self.gpa = gpa
        self.length = length


@dataclasses.dataclass(frozen=True)
class MemoryRegion:
    gpa: int
    size: int
    offset: int


class GuestMemory:
    """Guest RAM as QEMU shares it (``SYNC_SYSMEM``), addressed by guest-physical address.

    This is what a device's DMA sees: :meth:`read` and :meth:`write` go straight to the memfds
    QEMU backs guest RAM with, so the guest sees a write at once. An access that touches no RAM
    section (MMIO, a hole, beyond RAM) raises :class:`GuestMemoryError`, as a PCIe read would
    complete with Unsupported Request.
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._regions: list[tuple[MemoryRegion, mmap.mmap, int]] = []   # region, map, skew
        self._fds: list[int] = []
        self.generation = 0
        """How many memory maps QEMU has sent."""

    @property
    def regions(self) -> list[MemoryRegion]:
        return [region for region, _, _ in self._regions]

    def remap(self, regions: Sequence[MemoryRegion], fds: Sequence[int]) -> None:
        """Replace the map: section ``i`` of ``regions`` lives in ``fds[i]`` (taken over)."""
        if len(regions) != len(fds):
            raise ValueError(f"{len(regions)} memory regions but {len(fds)} file descriptors")
        self.close()
        mapped = []
        try:
            for region, fd in zip(regions, fds):
                # mmap offsets must be page aligned; QEMU's section offsets normally are.
                skew = region.offset % mmap.ALLOCATIONGRANULARITY
                mapping = mmap.mmap(fd, region.size + skew, mmap.MAP_SHARED,
                                    mmap.PROT_READ | mmap.PROT_WRITE, offset=region.offset - skew)
                mapped.append((region, mapping, skew))
        except BaseException:
            for _, mapping, _ in mapped:
                mapping.close()
            for fd in fds:
                os.close(fd)
            raise
        mapped.sort(key=lambda item: item[0].gpa)
        self._regions = mapped
        self._starts = [region.gpa for region, _, _ in mapped]
        self._fds = list(fds)
        self.generation += 1
        log.debug("guest memory map %d: %s", self.generation,
                  ", ".join(f"{r.gpa:#x}+{r.size:#x}@{r.offset:#x}" for r in self.regions))

    def close(self) -> None:
        for _, mapping, _ in self._regions:
            mapping.close()
        for fd in self._fds:
            os.close(fd)
        self._regions, self._starts, self._fds = [], [], []

    def _pieces(self, gpa: int, length: int):
        """(mapping, start, count) for each RAM section an access touches, in address order."""
        if gpa < 0 or length < 0:
            raise GuestMemoryError(gpa, length)
        pos, end = gpa, gpa + length
        while pos < end:
            i = bisect.bisect_right(self._starts, pos) - 1
            if i < 0:
                raise GuestMemoryError(gpa, length)
            region, mapping, skew = self._regions[i]
            if pos >= region.gpa + region.size:
                raise GuestMemoryError(gpa, length)
            count = min(end, region.gpa + region.size) - pos
            yield mapping, skew + pos - region.gpa, count
            pos += count

    def read(self, gpa: int, length: int) -> bytes:
        return b"".join(mapping[start:start + count]
                        for mapping, start, count in list(self._pieces(gpa, length)))

    def write(self, gpa: int, data: bytes) -> None:
        pieces = list(self._pieces(gpa, len(data)))    # check the whole range before writing
        done = 0
        for mapping, start, count in pieces:
            mapping[start:start + count] = data[done:done + count]
            done += count

    def contains(self, gpa: int, length: int = 1) -> bool:
        try:
            list(self._pieces(gpa, length))
        except GuestMemoryError:
            return False
        return True


# --- INTx ---------------------------------------------------------------------------------------

class Interrupt:
    """The device's INTx line, delivered through the eventfds of ``SET_IRQFD``.

    :meth:`set_level` follows the line: a rising edge writes the irqfd (QEMU's remote I/O hub
    does the same, ``hw/remote/iohub.c``); when the guest has acknowledged the interrupt, QEMU
    signals the resample fd and :meth:`resample` raises it again if the line is still asserted.
    Before ``SET_IRQFD`` arrives (and under TCG, where QEMU cannot route the irqfd) nothing
    reaches the guest, but :attr:`assertions` still counts the edges.
    """

    def __init__(self) -> None:
        self.irqfd: int | None = None
        self.resamplefd: int | None = None
        self.level = False
        self.assertions = 0
        """Rising edges of the line since the server started."""
        self.signals = 0
        """Writes to the irqfd (rising edges while connected, plus resample re-raises)."""

    def connect(self, irqfd: int, resamplefd: int) -> None:
        """Take over the two eventfds of ``SET_IRQFD`` (closing any earlier pair)."""
        self.close()
        self.irqfd, self.resamplefd = irqfd, resamplefd
        if self.level:
            self._signal()

    def close(self) -> None:
        for fd in (self.irqfd, self.resamplefd):
            if fd is not None:
                os.close(fd)
        self.irqfd = self.resamplefd = None

    def _signal(self) -> None:
        if self.irqfd is not None:
            os.eventfd_write(self.irqfd, 1)
            self.signals += 1

    def set_level(self, level: bool) -> None:
        level = bool(level)
        if level and not self.level:
            self.assertions += 1
            self._signal()
        self.level = level

    def resample(self) -> None:
        """The resample fd is readable: clear it and re-raise a line that is still high."""
        # The fd's flags are shared with QEMU, so it is polled rather than made non-blocking.
        if self.resamplefd is None or not select.select([self.resamplefd], [], [], 0)[0]:
            return
        os.eventfd_read(self.resamplefd)
        if self.level:
            self._signal()


# --- Requests and backends ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CfgRead:
    addr: int
    size: int


@dataclasses.dataclass(frozen=True)
class CfgWrite:
    addr: int
    value: int
    size: int


@dataclasses.dataclass(frozen=True)
class BarRead:
    bar: int | None         # None: the address is in no BAR the device has
    offset: int
    size: int
    address: int
    memory: bool


@dataclasses.dataclass(frozen=True)
class BarWrite:
    bar: int | None
    offset: int
    value: int
    size: int
    address: int
    memory: bool


@dataclasses.dataclass(frozen=True)
class DeviceReset:
    pass


Request = CfgRead | CfgWrite | BarRead | BarWrite | DeviceReset


class PciDeviceBackend(Protocol):
    """A PCI function as the proxy server sees it (plain methods).

    Addresses are byte offsets (configuration space, or within a BAR); ``size`` is 1, 2, 4 or
    8 bytes; values are little-endian integers of ``size`` bytes. The device reaches guest
    memory and its interrupt line through the server's :class:`GuestMemory` and
    :class:`Interrupt`, handed to it when it is made.
    """

    def cfg_read(self, addr: int, size: int) -> int: ...

    def cfg_write(self, addr: int, value: int, size: int) -> None: ...

    def bar_read(self, bar: int, offset: int, size: int) -> int: ...

    def bar_write(self, bar: int, offset: int, value: int, size: int) -> None: ...

    def reset(self) -> None:
        """Device reset (QEMU's system reset): back to the power-on state."""

    def settle(self) -> None:
        """Called after each answer: finish whatever the last access started before the server
        blocks on the next message (a simulated device clocks until idle)."""


class AsyncPciDeviceBackend(Protocol):
    """:class:`PciDeviceBackend` with coroutine methods, for :meth:`ProxyServer.serve_async`."""

    async def cfg_read(self, addr: int, size: int) -> int: ...

    async def cfg_write(self, addr: int, value: int, size: int) -> None: ...

    async def bar_read(self, bar: int, offset: int, size: int) -> int: ...

    async def bar_write(self, bar: int, offset: int, value: int, size: int) -> None: ...

    async def reset(self) -> None: ...

    async def settle(self) -> None: ...


class BarMap:
    """Where the device's BARs are, learned from the configuration writes the server forwards.

    After every write that touches a BAR register the server reads the register back from the
    device. A write of all ones is a size probe (PCI Local Bus 3.0 §6.2.5.1): the read-back's
    lowest set address bit is the size. Any other write places the BAR at the read-back address.
    A device reset puts every BAR back at 0.
    """
    COUNT = 6
    FIRST = 0x10

    def __init__(self) -> None:
        self.base = [0] * self.COUNT
        self.size = [0] * self.COUNT
        self.io = [False] * self.COUNT

    @classmethod
    def registers_touched(cls, addr: int, size: int) -> list[int]:
        """BAR indexes whose 4-byte register overlaps bytes ``addr .. addr+size-1``."""
        first = max(addr, cls.FIRST)
        last = min(addr + size, cls.FIRST + 4 * cls.COUNT) - 1
        return list(range((first - cls.FIRST) // 4, (last - cls.FIRST) // 4 + 1)) \
            if first <= last else []

    def update(self, bar: int, written: int | None, readback: int) -> None:
        io = bool(readback & 1)
        address = readback & (~0x3 if io else ~0xF) & 0xFFFFFFFF
        if not io and (readback >> 1) & 3 == 2:
            log.warning("BAR%d is a 64-bit BAR: QEMU's proxy handles only 32-bit BARs", bar)
        if written == 0xFFFFFFFF:
            self.size[bar] = address & -address
            self.io[bar] = io
            log.debug("BAR%d: %s, %#x bytes", bar, "I/O" if io else "memory", self.size[bar])
        else:
            self.base[bar] = address
            log.debug("BAR%d at %#x", bar, address)

    def reset(self) -> None:
        self.base = [0] * self.COUNT

    def decode(self, address: int, memory: bool) -> tuple[int, int] | None:
        """(bar, offset) of an absolute address, or None when no BAR holds it."""
        for bar in range(self.COUNT):
            size = self.size[bar]
            if size and self.io[bar] != memory and self.base[bar] <= address < self.base[bar] + size:
                return bar, address - self.base[bar]
        return None


_Steps = Generator[tuple[str, tuple], object, int]


class ProxyServer:
    """Serves QEMU's ``x-pci-proxy-dev`` for one device backend over ``sock``.

    Parameters
    ----------
    sock : socket.socket
        Our end of the unix stream socket whose other end QEMU got as ``fd=N``.
    observer : callable, optional
        Called as ``observer(request, result)`` after each answered request, e.g. to log the
        accesses; ``result`` is the value read (0 for writes and resets).

    Attributes
    ----------
    memory : GuestMemory
        Guest RAM, kept up to date from ``SYNC_SYSMEM``.
    interrupt : Interrupt
        The INTx line, connected by ``SET_IRQFD``.
    bars : BarMap
        The BAR sizes and bases the server has learned.
    counts : collections.Counter
        Messages received, by :class:`Command`.
    """

    def __init__(self, sock: socket.socket, *,
                 observer: Callable[[Request, int], None] | None = None):
        self.sock = sock
        self.memory = GuestMemory()
        self.interrupt = Interrupt()
        self.bars = BarMap()
        self.counts: Counter[Command] = Counter()
        self.observer = observer
        self._stop = threading.Event()

    # -- receiving

    def _decode(self, msg: Message) -> Request | None:
        """The request a message asks the device for; None for the ones the server handles."""
        command, payload, fds = msg.command, msg.payload, msg.fds
        self.counts[command] += 1
        expect = {Command.SYNC_SYSMEM: (SYNC_SYSMEM.size, None), Command.SET_IRQFD: (0, 2),
                  Command.PCI_CFGREAD: (CONF_DATA.size, 0), Command.PCI_CFGWRITE: (CONF_DATA.size, 0),
                  Command.BAR_READ: (BAR_ACCESS.size, 0), Command.BAR_WRITE: (BAR_ACCESS.size, 0),
                  Command.DEVICE_RESET: (0, 0)}.get(command)
        if expect is None:
            self._close_fds(fds)
            raise ProtocolError(f"QEMU sent {command.name}, which a device never receives")
        size, nfds = expect
        if len(payload) != size or (nfds is not None and len(fds) != nfds):
            self._close_fds(fds)
            raise ProtocolError(f"{command.name} with {len(payload)} payload bytes and "
                                f"{len(fds)} fds (expected {size} bytes and "
                                f"{'some' if nfds is None else nfds} fds)")
        if command is Command.SYNC_SYSMEM:
            fields = SYNC_SYSMEM.unpack(payload)
            gpas, sizes, offsets = fields[0:8], fields[8:16], fields[16:24]
            if not 0 < len(fds) <= MAX_FDS:
                self._close_fds(fds)
                raise ProtocolError(f"SYNC_SYSMEM with {len(fds)} fds")
            self.memory.remap([MemoryRegion(gpas[i], sizes[i], offsets[i]) for i in range(len(fds))],
                              fds)
            return None
        if command is Command.SET_IRQFD:
            self.interrupt.connect(fds[0], fds[1])
            log.debug("INTx eventfds connected")
            return None
        if command in (Command.PCI_CFGREAD, Command.PCI_CFGWRITE):
            addr, value, length = CONF_DATA.unpack(payload)
            if length not in (1, 2, 4):
                raise ProtocolError(f"configuration access of {length} bytes")
            if command is Command.PCI_CFGREAD:
                return CfgRead(addr, length)
            return CfgWrite(addr, value & ((1 << 8 * length) - 1), length)
        if command in (Command.BAR_READ, Command.BAR_WRITE):
            address, value, length, memory = BAR_ACCESS.unpack(payload)
            if length not in (1, 2, 4, 8):
                raise ProtocolError(f"BAR access of {length} bytes")
            hit = self.bars.decode(address, memory)
            bar, offset = hit if hit is not None else (None, 0)
            if command is Command.BAR_READ:
                return BarRead(bar, offset, length, address, memory)
            return BarWrite(bar, offset, value & ((1 << 8 * length) - 1), length, address, memory)
        return DeviceReset()

    @staticmethod
    def _close_fds(fds: Sequence[int]) -> None:
        for fd in fds:
            os.close(fd)

    def receive(self, timeout: float | None = None) -> Request | None:
        """Block until QEMU asks the device something; return it (None: QEMU closed the socket).

        ``SYNC_SYSMEM``, ``SET_IRQFD`` and INTx resample notifications are handled on the way.
        With ``timeout`` (seconds), raises ``TimeoutError`` when nothing came; :meth:`stop` ends
        a waiting receive with None within ``timeout``.
        """
        while not self._stop.is_set():
            watch = [self.sock]
            if self.interrupt.resamplefd is not None:
                watch.append(self.interrupt.resamplefd)
            readable, _, _ = select.select(watch, [], [], timeout)
            if not readable:
                raise TimeoutError("no message from QEMU")
            if self.interrupt.resamplefd in readable:
                self.interrupt.resample()
            if self.sock not in readable:
                continue
            msg = receive_message(self.sock)
            if msg is None:
                return None
            log.debug("<- %s %s fds=%d", msg.command.name, msg.payload.hex(), len(msg.fds))
            request = self._decode(msg)
            if request is not None:
                return request
        return None

    def stop(self) -> None:
        self._stop.set()

    def answer(self, request: Request, value: int) -> None:
        """Send the ``RET`` message for ``request`` (the value read, or 0)."""
        send_message(self.sock, Command.RET, RET_DATA.pack(value & (2**64 - 1)))
        if self.observer is not None:
            self.observer(request, value)

    # -- what to do for one request, written once for plain and coroutine backends

    def _steps(self, request: Request) -> _Steps:
        """Yield ``(method, args)`` backend calls (receiving each result); return the answer."""
        if isinstance(request, CfgRead):
            return (yield "cfg_read", (request.addr, request.size))
        if isinstance(request, CfgWrite):
            yield "cfg_write", (request.addr, request.value, request.size)
            for bar in BarMap.registers_touched(request.addr, request.size):
                readback = yield "cfg_read", (BarMap.FIRST + 4 * bar, 4)
                register = BarMap.FIRST + 4 * bar
                written = request.value if (request.addr, request.size) == (register, 4) else None
                self.bars.update(bar, written, readback)
            return 0
        if isinstance(request, (BarRead, BarWrite)):
            if request.bar is None:
                kind = "read" if isinstance(request, BarRead) else "write"
                log.warning("%d-byte %s at %#x hits no BAR of the device (BARs %s)",
                            request.size, kind, request.address, self.bars.base)
                return (1 << 8 * request.size) - 1 if isinstance(request, BarRead) else 0
            if isinstance(request, BarRead):
                return (yield "bar_read", (request.bar, request.offset, request.size))
            yield "bar_write", (request.bar, request.offset, request.value, request.size)
            return 0
        yield "reset", ()
        self.bars.reset()
        self.interrupt.set_level(False)
        return 0

    def handle(self, request: Request, backend: PciDeviceBackend) -> int:
        """Carry out one request on a plain backend and return the answer (not sent)."""
        steps = self._steps(request)
        result = None
        try:
            while True:
                method, args = steps.send(result)
                result = getattr(backend, method)(*args)
        except StopIteration as done:
            return int(done.value or 0)

    async def handle_async(self, request: Request, backend: AsyncPciDeviceBackend) -> int:
        """:meth:`handle` for a coroutine backend."""
        steps = self._steps(request)
        result = None
        try:
            while True:
                method, args = steps.send(result)
                result = await getattr(backend, method)(*args)
        except StopIteration as done:
            return int(done.value or 0)

    def serve(self, backend: PciDeviceBackend, *, poll: float = 0.5) -> None:
        """Serve until QEMU closes the socket or :meth:`stop` is called."""
        while True:
            try:
                request = self.receive(timeout=poll)
            except TimeoutError:
                continue
            if request is None:
                return
            self.answer(request, self.handle(request, backend))
            backend.settle()

    async def serve_async(self, backend: AsyncPciDeviceBackend) -> None:
        """Serve a coroutine backend (e.g. inside a cocotb test) until QEMU closes the socket.

        Waiting for the next message blocks the caller's thread, and with it the simulator:
        the device is only clocked while a request is handled and while ``settle`` runs.
        """
        while True:
            request = self.receive()
            if request is None:
                return
            self.answer(request, await self.handle_async(request, backend))
            await backend.settle()

    def close(self) -> None:
        self.memory.close()
        self.interrupt.close()
        self.sock.close()
