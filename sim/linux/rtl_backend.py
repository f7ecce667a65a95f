"""The RTL device behind QEMU's proxy: an :class:`~sim.linux.proxy.AsyncPciDeviceBackend` that
speaks TLPs to :class:`~sim.blk_device.BlkDeviceHarness` in a cocotb simulation.

Every request of the guest becomes what a root port would send the function:

* ``cfg_read`` / ``cfg_write``: a CfgRd0 / CfgWr0 (PCIe Base 4.0 §2.2.7) with the byte enables of
  the access, then the design is clocked until its completion comes back; a completion with a
  status other than SC reads as all ones (what a root complex returns for a failed
  configuration read, §2.3.2);
* ``bar_read`` / ``bar_write``: a MemRd32 / MemWr32 (§2.2.4.1) at the BAR's address as the
  guest programmed it into the RTL (the RTL decodes it itself), covering the DWs the access
  touches with First/Last DW byte enables; reads wait for the CplD;
* ``reset``: ``rst`` for a few cycles, then the time the reorder buffers need to clear their
  memories (the disk keeps its contents, as the RTL's reset promises).

While the design is clocked, every TLP it sends on ``tx`` is served at once, as the root
complex would: a MemRd is answered from :class:`~sim.linux.proxy.GuestMemory` with CplDs split
at naturally aligned 256-byte boundaries (multiples of the 64-byte Read Completion Boundary,
§2.3.1.1), or with an Unsupported Request completion when the range is not guest RAM; a MemWr
goes into guest memory (dropped and counted when it is not RAM); Assert_INTA / Deassert_INTA
(§2.2.8.1) drive :meth:`~sim.linux.proxy.Interrupt.set_level`.

``settle`` clocks after each answer until the device is idle: every element the virtqueue
engine took has been returned (``stats.elements == stats.buffers_used``), no completion is
waiting to enter ``rx`` and ``tx`` has been quiet for :attr:`RtlBackend.quiet_cycles` cycles
after a write (:attr:`RtlBackend.read_quiet_cycles` after a read).
Between two messages the simulation does not advance at all (see :mod:`sim.linux.proxy`).

The clocking is one coroutine per access, no background tasks: each cycle it drives the next
``rx`` beat just after the rising edge and samples both handshakes in the read-only phase, so
the order of events is fully determined by the guest's accesses.
"""
from __future__ import annotations

import collections
import dataclasses
import logging

from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from hdl.pcie.spec import MsgCode, raw_tlp_beat_layout
from hdl.virtio.virtqueue_port import VirtqStats
from sim.layout import pack, unpack
from sim.linux.proxy import GuestMemory, GuestMemoryError, Interrupt
from sim.model import tlp as model

__all__ = ["RtlBackend", "DeviceTimeout", "DmaCounters", "completion_chunks"]

log = logging.getLogger(__name__)

ROOT_ID = 0x0000
"""Requester ID of the root port (bus 0, device 0, function 0) and completer ID of its
completions."""

CFG_RD0, CFG_WR0 = 0x04, 0x44
MEM_RD32, MEM_WR32 = 0x00, 0x40
CPL, CPL_D = 0x0A, 0x4A
STATUS_SC, STATUS_UR = 0, 1

COMPLETION_BOUNDARY = 256
"""CplDs for the device's reads end on multiples of this (a multiple of the 64-byte RCB and
no larger than the smallest Max_Payload_Size the device may be set to, 128 * 2)."""


class DeviceTimeout(RuntimeError):
    """The RTL did not answer a request (or did not become idle) within the cycle budget."""


@dataclasses.dataclass
class DmaCounters:
    """What the device did to guest memory (bytes and TLPs), and what failed."""
    read_requests: int = 0
    read_bytes: int = 0
    completions: int = 0
    write_requests: int = 0
    write_bytes: int = 0
    unsupported_reads: int = 0
    dropped_writes: int = 0
    intx_messages: int = 0


def _enabled_bytes(first_be: int, last_be: int, length: int) -> list[int]:
    """Byte offsets (from the DW-aligned address) a request's byte enables select."""
    out = []
    for dw in range(length):
        be = first_be if dw == 0 else last_be if dw == length - 1 else 0xF
        out += [4 * dw + i for i in range(4) if (be >> i) & 1]
    return out


def completion_chunks(addr: int, length: int, first_be: int, last_be: int,
                      boundary: int = COMPLETION_BOUNDARY) -> list[tuple[int, int, int]]:
    """How a MemRd is completed: ``(first byte address, byte count remaining, bytes)`` per
    CplD, per §2.3.1.1. ``addr`` is DW aligned; a read with no byte enabled (zero length)
    is one completion of one DW with Byte Count 1."""
    enabled = _enabled_bytes(first_be, last_be, length)
    if not enabled:
        return [(addr, 1, 0)]
    start = addr + enabled[0]
    end = addr + enabled[-1] + 1
    chunks = []
    pos = start
    while pos < end:
        stop = min(end, (pos // boundary + 1) * boundary)
        chunks.append((pos, end - pos, stop - pos))
        pos = stop
    return chunks


class RtlBackend:
    """The device of :class:`~sim.linux.proxy.ProxyServer` is the RTL in this simulation.

    Parameters
    ----------
    dut : cocotb handle
        The :class:`~sim.blk_device.BlkDeviceHarness` toplevel (``clk``, ``rst``,
        ``function_reset``, ``rx__*``, ``tx__*``, ``stats``); the clock must be running.
    memory : GuestMemory
        Guest RAM, for the device's DMA.
    interrupt : Interrupt
        The INTx line towards QEMU.
    bar_base : callable
        ``bar_base(bar)``: the address the guest placed a BAR at (the server's
        :class:`~sim.linux.proxy.BarMap`), which is what the RTL decodes.
    width : int
        The raw TLP stream width of the build (64 or 128).
    reset_cycles : int
        Cycles to wait after reset before the first request (the reorder buffers clear
        their memories then).
    timeout_cycles : int
        Most cycles one access or one ``settle`` may take before :class:`DeviceTimeout`.

    Attributes
    ----------
    dma : DmaCounters
    cycles : int
        Cycles clocked so far (the simulated time is ``cycles`` clock periods).
    accesses : int
        Requests handled.
    quiet_cycles : int
        How long ``tx`` must be quiet, with the engine idle, for ``settle`` to return after
        a write or a reset (enough for a doorbell to reach the engine and its first read to
        leave).
    read_quiet_cycles : int
        The same after a read: a read starts no work, but reading the ISR status clears it
        and the Deassert_INTA follows within a few cycles.
    """

    quiet_cycles = 48
    read_quiet_cycles = 16

    def __init__(self, dut, memory: GuestMemory, interrupt: Interrupt, bar_base, *,
                 width: int = 64, reset_cycles: int = 200, timeout_cycles: int = 2_000_000):
        if width not in (64, 128):
            raise ValueError(f"width must be 64 or 128, not {width!r}")
        self.dut = dut
        self.memory = memory
        self.interrupt = interrupt
        self.bar_base = bar_base
        self.width = width
        self.reset_cycles = reset_cycles
        self.timeout_cycles = timeout_cycles
        self.layout = raw_tlp_beat_layout(width)
        self.dma = DmaCounters()
        self.cycles = 0
        self.accesses = 0
        self._rx: collections.deque[int] = collections.deque()   # packed beats for rx
        self._rx_driving = False
        self._rx_valid = 0          # what rx.valid is driven to (written only when it changes)
        self._tx_beats: list[dict] = []
        self._tag = 0
        self._answers: dict[int, tuple[dict, list[int]]] = {}
        self._quiet = 0
        self._settle_quiet = self.quiet_cycles
        self.dut.tx__ready.value = 1
        self.dut.rx__valid.value = 0

    # --- clocking ------------------------------------------------------------------------------

    async def _cycle(self) -> None:
        """One clock cycle: drive the next rx beat, take a tx beat if there is one."""
        dut = self.dut
        await RisingEdge(dut.clk)
        self.cycles += 1
        if not self._rx_driving:
            if self._rx:
                dut.rx__payload.value = self._rx[0]
                if not self._rx_valid:
                    dut.rx__valid.value = self._rx_valid = 1
                self._rx_driving = True
            elif self._rx_valid:
                dut.rx__valid.value = self._rx_valid = 0
        await ReadOnly()
        if self._rx_driving and dut.rx__ready.value:
            self._rx.popleft()
            self._rx_driving = False
        if dut.tx__valid.value:
            self._quiet = 0
            beat = unpack(self.layout, int(dut.tx__payload.value))
            self._tx_beats.append(beat)
            if beat["last"]:
                beats, self._tx_beats = self._tx_beats, []
                self._from_device(*model.decode(model.join_raw_beats(beats, self.width)))
        else:
            self._quiet += 1

    def _send(self, hdr: dict, payload: list[int] = ()) -> None:
        for beat in model.raw_beats(model.encode(hdr, payload), self.width):
            self._rx.append(pack(self.layout, beat))

    def _next_tag(self) -> int:
        self._tag = (self._tag + 1) & 0xFF
        return self._tag

    async def _request(self, hdr: dict, payload: list[int] = ()) -> tuple[dict, list[int]] | None:
        """Send a request; for a non-posted one clock until its completion and return it."""
        self.accesses += 1
        posted = model.is_posted(hdr["fmt_type"])
        self._settle_quiet = self.read_quiet_cycles if not model.has_data(hdr["fmt_type"]) \
            else self.quiet_cycles
        tag = hdr["tag"] = self._next_tag()
        self._send(hdr, payload)
        for _ in range(self.timeout_cycles):
            await self._cycle()
            if posted and not self._rx:
                return None
            if tag in self._answers:
                return self._answers.pop(tag)
        raise DeviceTimeout(f"no completion for {hdr} within {self.timeout_cycles} cycles")

    # --- what the device sends -------------------------------------------------------------------

    def _from_device(self, hdr: dict, payload: list[int]) -> None:
        kind = model.kind(hdr["fmt_type"])
        if kind == "completion":
            if hdr["requester_id"] != ROOT_ID or hdr["tag"] != self._tag:
                log.error("unexpected completion from the RTL: %s", hdr)
                return
            self._answers[hdr["tag"]] = (hdr, payload)
        elif kind == "message":
            code = hdr["msg_code"]
            if code in (MsgCode.ASSERT_INTA.value, MsgCode.DEASSERT_INTA.value):
                self.dma.intx_messages += 1
                self.interrupt.set_level(code == MsgCode.ASSERT_INTA.value)
            else:
                log.warning("message %#04x from the RTL ignored", code)
        elif kind == "address" and model.has_data(hdr["fmt_type"]):
            self._dma_write(hdr, payload)
        elif kind == "address" and hdr["fmt_type"] & 0x1F == 0:
            self._dma_read(hdr)
        else:
            log.error("TLP the root complex does not take from the RTL: %s", hdr)

    def _dma_read(self, hdr: dict) -> None:
        addr, length = hdr["addr"], hdr["length"] or 1024
        self.dma.read_requests += 1
        chunks = completion_chunks(addr, length, hdr["first_be"], hdr["last_be"])
        cpl = dict(model.empty_header(), completer_id=ROOT_ID, requester_id=hdr["requester_id"],
                   tag=hdr["tag"], tc=hdr["tc"], attr=hdr["attr"])
        try:
            first = chunks[0][0]
            data = self.memory.read(first & ~3, ((chunks[-1][0] + chunks[-1][2] + 3) & ~3)
                                    - (first & ~3) or 4)
        except GuestMemoryError as exc:
            log.warning("device read outside guest RAM: %s", exc)
            self.dma.unsupported_reads += 1
            self._send(dict(cpl, fmt_type=CPL, status=STATUS_UR, byte_count=chunks[0][1] & 0xFFF,
                            lower_address=first & 0x7F))
            return
        base = first & ~3
        for pos, remaining, count in chunks:
            lo = (pos & ~3) - base
            hi = ((pos + max(count, 1) + 3) & ~3) - base
            dws = model.bytes_to_dws(data[lo:hi])
            self._send(dict(cpl, fmt_type=CPL_D, length=len(dws) & 0x3FF, status=STATUS_SC,
                            byte_count=remaining & 0xFFF, lower_address=pos & 0x7F), dws)
            self.dma.completions += 1
            self.dma.read_bytes += count

    def _dma_write(self, hdr: dict, payload: list[int]) -> None:
        addr, length = hdr["addr"], hdr["length"] or 1024
        self.dma.write_requests += 1
        data = model.dws_to_bytes(payload)
        enabled = _enabled_bytes(hdr["first_be"], hdr["last_be"], length)
        # Contiguous runs of enabled bytes (byte enables are contiguous except in 1- and 2-DW
        # writes, §2.2.5).
        runs: list[list[int]] = []
        for offset in enabled:
            if runs and runs[-1][1] == offset:
                runs[-1][1] += 1
            else:
                runs.append([offset, offset + 1])
        try:
            for lo, hi in runs:
                if not self.memory.contains(addr + lo, hi - lo):
                    raise GuestMemoryError(addr + lo, hi - lo)
            for lo, hi in runs:
                self.memory.write(addr + lo, data[lo:hi])
                self.dma.write_bytes += hi - lo
        except GuestMemoryError as exc:
            log.warning("device write outside guest RAM dropped: %s", exc)
            self.dma.dropped_writes += 1

    # --- the backend -----------------------------------------------------------------------------

    @staticmethod
    def _byte_enables(offset: int, size: int) -> tuple[int, int, int]:
        """(DW count, First DW BE, Last DW BE) of ``size`` bytes at ``offset``."""
        lo, hi = offset & 3, (offset & 3) + size
        length = (hi + 3) // 4
        mask = ((1 << size) - 1) << lo
        first = mask & 0xF
        last = (mask >> 4 * (length - 1)) & 0xF if length > 1 else 0
        return length, first, last

    async def cfg_read(self, addr: int, size: int) -> int:
        _, first_be, _ = self._byte_enables(addr, size)
        hdr, payload = await self._request(dict(
            model.empty_header(), fmt_type=CFG_RD0, length=1, requester_id=ROOT_ID,
            first_be=first_be, cfg_reg=addr >> 2))
        if hdr["status"] != STATUS_SC or not payload:
            return (1 << 8 * size) - 1
        return (payload[0] >> 8 * (addr & 3)) & ((1 << 8 * size) - 1)

    async def cfg_write(self, addr: int, value: int, size: int) -> None:
        _, first_be, _ = self._byte_enables(addr, size)
        await self._request(dict(
            model.empty_header(), fmt_type=CFG_WR0, length=1, requester_id=ROOT_ID,
            first_be=first_be, cfg_reg=addr >> 2), [(value << 8 * (addr & 3)) & 0xFFFF_FFFF])

    def _mem_header(self, bar: int, offset: int, size: int) -> dict:
        address = self.bar_base(bar) + offset
        length, first_be, last_be = self._byte_enables(address, size)
        return dict(model.empty_header(), length=length, requester_id=ROOT_ID,
                    first_be=first_be, last_be=last_be, addr=address & ~3)

    async def bar_read(self, bar: int, offset: int, size: int) -> int:
        hdr = self._mem_header(bar, offset, size)
        hdr["fmt_type"] = MEM_RD32
        cpl, payload = await self._request(hdr)
        if cpl["status"] != STATUS_SC or not payload:
            return (1 << 8 * size) - 1
        data = model.dws_to_bytes(payload)
        lo = (self.bar_base(bar) + offset) & 3
        return int.from_bytes(data[lo:lo + size], "little")

    async def bar_write(self, bar: int, offset: int, value: int, size: int) -> None:
        hdr = self._mem_header(bar, offset, size)
        hdr["fmt_type"] = MEM_WR32
        lo = (self.bar_base(bar) + offset) & 3
        data = bytes(lo) + value.to_bytes(size, "little")
        data += bytes(-len(data) % 4)
        await self._request(hdr, model.bytes_to_dws(data))

    async def reset(self) -> None:
        dut = self.dut
        await RisingEdge(dut.clk)
        dut.rst.value = 1
        dut.rx__valid.value = self._rx_valid = 0
        self._rx.clear()
        self._rx_driving = False
        self._tx_beats = []
        self._answers.clear()
        await ClockCycles(dut.clk, 10)
        dut.rst.value = 0
        await ClockCycles(dut.clk, self.reset_cycles)
        self.cycles += 10 + self.reset_cycles
        self._settle_quiet = self.quiet_cycles
        self.interrupt.set_level(False)

    def _engine_busy(self) -> bool:
        stats = unpack(VirtqStats, int(self.dut.stats.value))
        return stats["elements"] != stats["buffers_used"]

    async def settle(self) -> None:
        for _ in range(self.timeout_cycles):
            await self._cycle()
            if (self._quiet >= self._settle_quiet and not self._rx and not self._tx_beats
                    and not self._engine_busy()):
                return
        raise DeviceTimeout(f"the device was still busy after {self.timeout_cycles} cycles")
