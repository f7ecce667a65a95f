"""A small pure-Python PCI device that stands in for the RTL behind :class:`ProxyServer`.

It proves the whole path from a Linux guest to a device model before the RTL exists: QEMU's
probe and SeaBIOS' enumeration read and size its configuration space, Linux lists it in
``/sys/bus/pci/devices``, ``devmem`` reaches its registers, and its DMA engine copies bytes in
guest memory through :class:`GuestMemory`.

Identity: vendor 0x1AF4 with device ID :data:`STANDIN_DEVICE_ID`, outside the virtio range
0x1000..0x107F (virtio 1.2 §4.1.2), so no driver binds (``virtio_pci`` probes any 0x1AF4 device
and declines it); class 0xFF0000 ("does not fit any defined class", PCI Code and ID Assignment
§1). A type 0 header with one BAR: BAR0, 32-bit non-prefetchable memory, 4 KiB; no capabilities;
INTx pin A.

BAR0 registers (:class:`Reg`, 32 bits each unless noted, little endian, any access of 1, 2, 4 or
8 bytes that stays inside the register window):

====== =========== ============================================================================
offset name        behaviour
====== =========== ============================================================================
0x000  MAGIC       read-only :data:`MAGIC`
0x004  VERSION     read-only :data:`VERSION`
0x008  SCRATCH     read/write
0x010  SCRATCH64   read/write, 64 bits (0x010..0x017)
0x020  DMA_SRC     64 bits: guest-physical source address
0x028  DMA_DST     64 bits: guest-physical destination address
0x030  DMA_LEN     bytes to copy, 1..:data:`DMA_MAX_LEN`
0x034  DMA_CTRL    write :data:`CTRL_START` to copy now; reads DONE / ERROR of the last copy
0x038  DMA_COUNT   read-only: copies done since reset
0x040  IRQ_STATUS  bit 0: a copy finished; write 1 to clear
0x044  IRQ_ENABLE  bit 0: INTx follows IRQ_STATUS bit 0
====== =========== ============================================================================

A copy fails (``DMA_CTRL`` reads ERROR, nothing is written) when Bus Master Enable is clear in
the Command register (PCIe Base §7.5.1.1.3), when the length is out of range, or when either
range is not guest RAM. INTx is asserted while ``IRQ_STATUS & IRQ_ENABLE`` is set and Interrupt
Disable is clear; the Status register's Interrupt Status bit shows the pending state either way.
"""
from __future__ import annotations

import enum
import hashlib
import logging

from hdl.pcie.spec import Cfg
from sim.linux.proxy import GuestMemory, GuestMemoryError, Interrupt

__all__ = ["StandinDevice", "Reg", "STANDIN_VENDOR_ID", "STANDIN_DEVICE_ID", "STANDIN_CLASS",
           "STANDIN_REVISION", "BAR0_SIZE", "MAGIC", "VERSION", "DMA_MAX_LEN", "CTRL_START", "CTRL_DONE", "CTRL_ERROR",
           "IRQ_DMA_DONE"]

log = logging.getLogger(__name__)

STANDIN_VENDOR_ID = 0x1AF4
STANDIN_DEVICE_ID = 0x7E57
STANDIN_CLASS = 0xFF0000
STANDIN_REVISION = 0x01
BAR0_SIZE = 0x1000
CONFIG_SIZE = 256                   # conventional PCI: the proxy is not a PCIe device

MAGIC = 0x53544E44                  # "STND" in the register's bytes read as big-endian text
VERSION = 0x00010000
DMA_MAX_LEN = 0x10000
CTRL_START = 1 << 0
CTRL_DONE = 1 << 1
CTRL_ERROR = 1 << 2
IRQ_DMA_DONE = 1 << 0


class Reg(enum.IntEnum):
    """BAR0 register offsets (see the module docstring)."""
    MAGIC = 0x000
    VERSION = 0x004
    SCRATCH = 0x008
    SCRATCH64 = 0x010
    DMA_SRC = 0x020
    DMA_DST = 0x028
    DMA_LEN = 0x030
    DMA_CTRL = 0x034
    DMA_COUNT = 0x038
    IRQ_STATUS = 0x040
    IRQ_ENABLE = 0x044


_REG_OFFSETS = frozenset(Reg)

# Command register bits software may set (PCIe Base §7.5.1.1.3): memory space, bus master,
# parity error response, SERR# enable, interrupt disable. I/O space stays 0: there is no I/O BAR.
_COMMAND_WRITABLE = (Cfg.CMD_MEMORY_SPACE | Cfg.CMD_BUS_MASTER | Cfg.CMD_PARITY_ERROR_RESPONSE
                     | Cfg.CMD_SERR_ENABLE | Cfg.CMD_INTERRUPT_DISABLE)


class StandinDevice:
    """The stand-in PCI function: a :class:`~sim.linux.proxy.PciDeviceBackend`.

    Parameters
    ----------
    memory : GuestMemory
        Guest RAM, for the DMA engine.
    interrupt : Interrupt
        The INTx line.

    Attributes
    ----------
    copies : list of (src, dst, length, sha256 hex or None)
        Every copy asked for, with the digest of the bytes moved (None when it failed).
    """

    def __init__(self, memory: GuestMemory, interrupt: Interrupt):
        self.memory = memory
        self.interrupt = interrupt
        self.copies: list[tuple[int, int, int, str | None]] = []
        self.reset()

    # -- configuration space

    def reset(self) -> None:
        config = bytearray(CONFIG_SIZE)
        wmask = bytearray(CONFIG_SIZE)

        def put(offset: int, value: int, size: int, writable: int = 0) -> None:
            config[offset:offset + size] = value.to_bytes(size, "little")
            wmask[offset:offset + size] = writable.to_bytes(size, "little")

        put(Cfg.VENDOR_ID, STANDIN_VENDOR_ID, 2)
        put(Cfg.DEVICE_ID, STANDIN_DEVICE_ID, 2)
        put(Cfg.COMMAND, 0, 2, _COMMAND_WRITABLE)
        put(Cfg.REVISION_ID, STANDIN_REVISION, 1)
        put(Cfg.CLASS_CODE, STANDIN_CLASS, 3)
        put(Cfg.CACHE_LINE_SIZE, 0, 1, 0xFF)
        # BAR0: memory, 32-bit, non-prefetchable (type bits 0); address bits below the size
        # are hardwired to 0 (PCI Local Bus 3.0 §6.2.5.1).
        put(Cfg.BAR0, 0, 4, ~(BAR0_SIZE - 1) & 0xFFFFFFFF)
        put(Cfg.SUBSYSTEM_VENDOR_ID, STANDIN_VENDOR_ID, 2)
        put(Cfg.SUBSYSTEM_ID, STANDIN_DEVICE_ID, 2)
        put(Cfg.INTERRUPT_LINE, 0, 1, 0xFF)
        put(Cfg.INTERRUPT_PIN, 1, 1)            # INTA#
        self.config, self.wmask = config, wmask
        self.regs = {reg: 0 for reg in Reg}
        self.regs[Reg.MAGIC] = MAGIC
        self.regs[Reg.VERSION] = VERSION
        self._update_interrupt()
        log.debug("stand-in device reset")

    @property
    def command(self) -> int:
        return int.from_bytes(self.config[Cfg.COMMAND:Cfg.COMMAND + 2], "little")

    @property
    def bar0(self) -> int:
        return int.from_bytes(self.config[Cfg.BAR0:Cfg.BAR0 + 4], "little") & ~0xF

    def cfg_read(self, addr: int, size: int) -> int:
        if addr + size > CONFIG_SIZE:
            log.warning("configuration read of %d bytes at %#x is beyond the 256-byte space",
                        size, addr)
            return (1 << 8 * size) - 1
        return int.from_bytes(self.config[addr:addr + size], "little")

    def cfg_write(self, addr: int, value: int, size: int) -> None:
        if addr + size > CONFIG_SIZE:
            log.warning("configuration write of %d bytes at %#x is beyond the 256-byte space",
                        size, addr)
            return
        for i, byte in enumerate(value.to_bytes(size, "little")):
            mask = self.wmask[addr + i]
            self.config[addr + i] = (self.config[addr + i] & ~mask) | (byte & mask)
        self._update_interrupt()

    # -- BAR0

    @staticmethod
    def _window(offset: int, size: int) -> list[int]:
        """The 32-bit words an access touches (a 64-bit register is two words)."""
        return [offset // 4 * 4 + 4 * i for i in range((offset % 4 + size + 3) // 4)]

    def _word(self, word: int) -> int:
        for reg, width in ((Reg.SCRATCH64, 8), (Reg.DMA_SRC, 8), (Reg.DMA_DST, 8)):
            if reg <= word < reg + width:
                return (self.regs[reg] >> 8 * (word - reg)) & 0xFFFFFFFF
        if word in _REG_OFFSETS:
            return self.regs[Reg(word)]
        return 0

    def bar_read(self, bar: int, offset: int, size: int) -> int:
        if bar != 0 or offset + size > BAR0_SIZE:
            log.warning("read of BAR%d+%#x is outside BAR0", bar, offset)
            return (1 << 8 * size) - 1
        raw = b"".join(self._word(w).to_bytes(4, "little") for w in self._window(offset, size))
        start = offset % 4
        return int.from_bytes(raw[start:start + size], "little")

    def bar_write(self, bar: int, offset: int, value: int, size: int) -> None:
        if bar != 0 or offset + size > BAR0_SIZE:
            log.warning("write of BAR%d+%#x is outside BAR0", bar, offset)
            return
        for i, byte in enumerate(value.to_bytes(size, "little")):
            self._write_byte(offset + i, byte)
        # Side effects once per access, after all its bytes have landed.
        if offset <= Reg.DMA_CTRL < offset + size and value >> 8 * (Reg.DMA_CTRL - offset) & CTRL_START:
            self._copy()
        self._update_interrupt()

    def _write_byte(self, offset: int, byte: int) -> None:
        for reg, width in ((Reg.SCRATCH, 4), (Reg.SCRATCH64, 8), (Reg.DMA_SRC, 8),
                           (Reg.DMA_DST, 8), (Reg.DMA_LEN, 4), (Reg.IRQ_ENABLE, 4)):
            if reg <= offset < reg + width:
                shift = 8 * (offset - reg)
                self.regs[reg] = (self.regs[reg] & ~(0xFF << shift)) | (byte << shift)
                return
        if Reg.IRQ_STATUS <= offset < Reg.IRQ_STATUS + 4:
            self.regs[Reg.IRQ_STATUS] &= ~(byte << 8 * (offset - Reg.IRQ_STATUS))
        # MAGIC, VERSION, DMA_CTRL (acted on above), DMA_COUNT and holes ignore writes.

    # -- DMA and INTx

    def _copy(self) -> None:
        src, dst, length = self.regs[Reg.DMA_SRC], self.regs[Reg.DMA_DST], self.regs[Reg.DMA_LEN]
        digest = None
        if not self.command & Cfg.CMD_BUS_MASTER:
            log.info("DMA %#x -> %#x (%d bytes) refused: bus mastering is disabled",
                     src, dst, length)
        elif not 1 <= length <= DMA_MAX_LEN:
            log.info("DMA of %d bytes refused (1..%d allowed)", length, DMA_MAX_LEN)
        else:
            try:
                data = self.memory.read(src, length)
                self.memory.write(dst, data)
                digest = hashlib.sha256(data).hexdigest()
            except GuestMemoryError as exc:
                log.info("DMA %#x -> %#x (%d bytes) failed: %s", src, dst, length, exc)
        self.copies.append((src, dst, length, digest))
        if digest is not None:
            self.regs[Reg.DMA_CTRL] = CTRL_DONE
            self.regs[Reg.DMA_COUNT] = (self.regs[Reg.DMA_COUNT] + 1) & 0xFFFFFFFF
            log.debug("DMA %#x -> %#x, %d bytes, sha256 %s", src, dst, length, digest)
        else:
            self.regs[Reg.DMA_CTRL] = CTRL_DONE | CTRL_ERROR
        self.regs[Reg.IRQ_STATUS] |= IRQ_DMA_DONE

    def _update_interrupt(self) -> None:
        pending = bool(self.regs[Reg.IRQ_STATUS] & self.regs[Reg.IRQ_ENABLE])
        status = int.from_bytes(self.config[Cfg.STATUS:Cfg.STATUS + 2], "little")
        status = (status | Cfg.STS_INTERRUPT_STATUS) if pending else \
            (status & ~Cfg.STS_INTERRUPT_STATUS)
        self.config[Cfg.STATUS:Cfg.STATUS + 2] = status.to_bytes(2, "little")
        self.interrupt.set_level(pending and not self.command & Cfg.CMD_INTERRUPT_DISABLE)

    def settle(self) -> None:
        """Every access finishes before it is answered: nothing is left to do."""
