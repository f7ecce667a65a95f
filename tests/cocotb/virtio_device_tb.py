"""cocotb tests of the whole virtio-pci device (``VirtioDeviceHarness``) through cocotbext-pcie's
RootComplex (run by ``test_virtio_device.py``).

The :class:`TB` builds the clock, the root complex, the bridge (with an observer of the
completions the root complex sends), host memory (a :class:`~sim.model.memory.SparseMemory`
mapped into the root complex's address space, below and above 4 GiB) and a Linux-like
driver (:class:`VirtioDriver`): reset, ACKNOWLEDGE, DRIVER, feature negotiation,
FEATURES_OK, queues in host memory, MSI-X vectors, DRIVER_OK; buffers from a free list
(sequential under IN_ORDER), kicks with notification suppression, interrupt handlers that
reap the used ring from memory like ``virtblk_done`` does.

The device is judged from the link, independently of the RTL: every TLP it sends is
classified (used ring element, ``used->idx``, ``avail_event``, a test-backend data write into
a device-writable buffer, an MSI-X message; anything else is a violation), and per queue the
golden model's :class:`~sim.model.virtqueue.UsedRingChecker` reads the used ring the way a
driver does, with the ``used_event`` / ``avail->flags`` value the device read after each
``used->idx`` write (matched by tag in the root complex's completions) and the backend's
completions from the ``done_mon`` tap. The driver's own reaping must agree with the checker,
and every device-writable byte must hold the test backend's pattern.
"""
from __future__ import annotations

import json
import logging
import os
import random
from collections import deque
from dataclasses import dataclass, field

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, ReadOnly, RisingEdge, Timer
from cocotbext.axi import Region
from cocotbext.pcie.core import RootComplex
from cocotbext.pcie.core.tlp import Tlp

from hdl.pcie.dma_port import DmaError, dma_cmd_layout, read_data_layout, write_data_layout
from hdl.pcie.spec import CapId, Cfg, PcieCap
from hdl.virtio.spec import (CommonCfg, DeviceStatus, Feature, IsrStatus, PciCapCfgType,
                             VIRTIO_MSI_NO_VECTOR, VirtioPciCap, feature_mask, vring_need_event)
from hdl.virtio.test_backend import pattern_bytes
from hdl.virtio.test_device_backend import TEST_DEVICE_ID, TestDeviceCfg
from hdl.virtio.transport_map import TransportMap
from hdl.virtio.virtio_pci_device import TRANSPORT_FEATURES
from hdl.virtio.virtio_pci_transport import TransportCounters
from hdl.virtio.virtqueue_port import VirtqElemDone, VirtqError, VirtqErrorKind, VirtqStats
from sim.layout import pack, unpack
from sim.model import tlp as model
from sim.model.memory import SparseMemory
from sim.model.split_ring import RawDesc, RingDriver, SplitRing, SplitRingLayout
from sim.model.virtqueue import (AvailEventWrite, UsedRingChecker, UsedRingViolation,
                                 walk_chain)
from sim.pcie_bridge import PcieBridge
from sim.virtio_device_harness import RD_CMD_MON, WR_CMD_MON, WR_DONE_MON

log = logging.getLogger("cocotb.virtio_tb")

CLK_NS = 4
TIMEOUT_US = 2000
LOW_REGION = (0x9000_0000, 0x1000_0000)         # below 4 GiB: 3 DW headers
HIGH_REGION = (0x20_0000_0000, 0x1_0000_0000)   # above 4 GiB: 4 DW headers
RING_SPAN = 0x10_0000                           # queue q's rings at LOW_REGION + q * span
DATA_SPAN = 0x100_0000                          # queue q's buffers in its own span
PROBE_SPAN = 0x400_0000                         # the DMA probe's memory (after the queues')

ACK, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET = (
    int(DeviceStatus.ACKNOWLEDGE), int(DeviceStatus.DRIVER), int(DeviceStatus.DRIVER_OK),
    int(DeviceStatus.FEATURES_OK), int(DeviceStatus.DEVICE_NEEDS_RESET))
RING_FEATURES = feature_mask(Feature.IN_ORDER, Feature.EVENT_IDX, Feature.INDIRECT_DESC)


class GuestMemoryRegion(Region):
    """A window of a SparseMemory in the root complex's memory address space."""

    def __init__(self, mem: SparseMemory, base: int, size: int):
        super().__init__(size)
        self.mem = mem
        self.base_addr = base

    async def _read(self, address, length, **kwargs):
        return self.mem.read(self.base_addr + address, length)

    async def _write(self, address, data, **kwargs):
        self.mem.write(self.base_addr + address, bytes(data))


class ObservedBridge(PcieBridge):
    """The bridge, also showing every TLP the root complex sends to the device."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rx_observers = []

    async def upstream_recv(self, tlp: Tlp) -> None:
        for observer in self.rx_observers:
            observer(tlp)
        await super().upstream_recv(tlp)


def mem_write_span(hdr: dict, payload: list[int]) -> tuple[int, bytes]:
    """The host address and bytes a MemWr writes (contiguous byte enables)."""
    data = model.dws_to_bytes(payload)
    first, last = hdr["first_be"], hdr["last_be"]
    lo = (first & -first).bit_length() - 1
    if hdr["length"] == 1:
        hi = first.bit_length()
    else:
        hi = 4 * (hdr["length"] - 1) + last.bit_length()
    return hdr["addr"] + lo, data[lo:hi]


def mem_read_span(hdr: dict) -> tuple[int, int]:
    first, last = hdr["first_be"], hdr["last_be"]
    lo = (first & -first).bit_length() - 1
    hi = first.bit_length() if hdr["length"] == 1 else 4 * (hdr["length"] - 1) + last.bit_length()
    return hdr["addr"] + lo, hi - lo


@dataclass
class Workload:
    """What one queue's driver submits: ``requests`` buffers, at most ``depth`` outstanding,
    ``readable``/``writable`` elements (ranges) of ``length`` bytes (range), a share
    ``indirect`` through indirect tables (when negotiated), published ``chunk`` at a time."""
    requests: int = 100
    depth: int = 16
    readable: tuple[int, int] = (0, 2)
    writable: tuple[int, int] = (1, 3)
    length: tuple[int, int] = (1, 300)
    indirect: float = 0.3
    chunk: int = 4


@dataclass
class Buffer:
    seq: int            # checker seq: position in avail order since the queue was set up
    head: int
    writable: list      # (addr, len) of the device-writable elements
    writable_len: int
    readable: list
    written_len: int | None = None


class DriverQueue:
    """One virtqueue as the driver sees it, plus the device-side observation of it."""

    def __init__(self, drv: "VirtioDriver", index: int, size: int, workload: Workload,
                 vector: int):
        tb = drv.tb
        self.drv, self.tb, self.index, self.size = drv, tb, index, size
        self.workload = workload
        self.vector = vector
        self.in_order = drv.has(Feature.IN_ORDER)
        self.event_idx = drv.has(Feature.EVENT_IDX)
        self.indirect = drv.has(Feature.INDIRECT_DESC)
        self.layout = SplitRingLayout.contiguous(LOW_REGION[0] + RING_SPAN * index, size)
        self.ring = SplitRing(tb.mem, self.layout)
        self.rd = RingDriver(self.ring, in_order=self.in_order)
        # The link shows when a notification arrives, not when the engine decided it, so a
        # second notification for a second decision can look redundant: the checker only
        # counts those, and decided() / link_notification() bound them instead.
        self.checker = UsedRingChecker(size, in_order=self.in_order, event_idx=self.event_idx,
                                       strict_notifications=False)
        self.positive_decisions = 0         # decision reads whose value asked to notify
        self.link_notifications = 0
        self.data_next = 0
        self.buffers: dict[int, Buffer] = {}            # checker seq -> outstanding buffer
        self.by_head: dict[int, int] = {}
        self.avail_order: deque[int] = deque()          # outstanding seqs in avail order
        self.submitted = 0
        self.reaped: list[int] = []                     # seqs in the order the driver reaped
        self.unreleased: dict[int, int] = {}            # reaped, checker behind: seq -> head
        self.checker_done: set[int] = set()             # retired by the checker, not reaped
        self.retired: list[int] = []                    # seqs in the order the checker retired
        self.last_used = 0
        self.stopped = False
        self.busy = False
        self.again = False
        self.kicks = 0
        self.notifications = 0
        self.run_lengths: list[int] = []
        # device-side observation
        self.elem_bytes: dict[int, tuple[bytearray, int]] = {}
        self.idx_cmds: list[dict] = []      # used->idx writes: done cycle, value (link)
        self.idx_values = 0                 # idx write TLPs seen on the link
        self.covered = 0                    # idx writes already decided on
        self.decision_cmds: list[int] = []  # cycles the decision reads were taken
        self.decision_tlps = 0              # decision MemRds seen on the link
        self.completed_order: list[int] = []

    # --- building buffers ----------------------------------------------------------------
    def _alloc(self, length: int, align: int = 1) -> int:
        """Host memory for a buffer: alternately below and above 4 GiB, random alignment."""
        region = HIGH_REGION if self.tb.rng.random() < 0.5 else LOW_REGION
        base = region[0] + (0x400_0000 if region is LOW_REGION else 0) + DATA_SPAN * self.index
        self.data_next = (self.data_next + align - 1) // align * align
        if self.data_next + length > DATA_SPAN:
            self.data_next = 0
        addr = base + self.data_next + (self.tb.rng.randrange(8) if align == 1 else 0)
        self.data_next += length + 8
        return addr

    def add(self) -> bool:
        """Make one more buffer available (not yet published); False if no descriptors."""
        rng, w = self.tb.rng, self.workload
        nr = rng.randint(*w.readable)
        nw = rng.randint(*w.writable)
        elements = [(self._alloc(n := rng.randint(*w.length)), n, False) for _ in range(nr)]
        elements += [(self._alloc(n := rng.randint(*w.length)), n, True) for _ in range(nw)]
        use_indirect = self.indirect and rng.random() < w.indirect
        if not use_indirect:
            elements = elements[:self.size]
        if self.rd.num_free < (1 if use_indirect else len(elements)):
            return False
        table = self._alloc(16 * len(elements), 16) if use_indirect else None
        head = self.rd.add(elements, indirect_table=table)
        writable = [(a, n) for a, n, wr in elements if wr]
        wlen = sum(n for _, n in writable)
        seq = self.checker.available(head, wlen)
        self.buffers[seq] = Buffer(seq, head, writable, wlen,
                                   [(a, n) for a, n, wr in elements if not wr])
        self.by_head[head] = seq
        self.avail_order.append(seq)
        self.submitted += 1
        return True

    async def refill(self) -> None:
        """Top the queue up to its depth, publishing every ``chunk`` buffers, and kick."""
        w = self.workload
        added = 0
        while (not self.stopped and self.submitted < w.requests
               and len(self.buffers) < w.depth and self.add()):
            added += 1
            if added % w.chunk == 0:
                await self.publish()
        await self.publish()

    async def publish(self) -> None:
        old = self.rd.avail_idx
        new = self.rd.publish()
        if new == old:
            return
        # virtqueue_kick_prepare(): EVENT_IDX asks avail_event, otherwise used->flags.
        if self.event_idx:
            need = vring_need_event(self.ring.avail_event(), new, old)
        else:
            need = not self.ring.used_flags() & 1
        if need:
            self.kicks += 1
            await self.drv.notify(self.index)

    @property
    def finished(self) -> bool:
        return len(self.reaped) >= self.workload.requests

    # --- interrupt handler (virtblk_done) ------------------------------------------------
    def _disable_cb(self) -> None:
        if self.event_idx:
            self.ring.set_used_event(0)     # Linux's "hack" value while callbacks are off
        else:
            self.ring.set_avail_flags(1)

    def _enable_cb(self) -> bool:
        """Re-arm the callback; True if nothing more is pending (virtqueue_enable_cb)."""
        if self.event_idx:
            self.ring.set_used_event(self.last_used)
        else:
            self.ring.set_avail_flags(0)
        return self.ring.used_idx() == self.last_used

    def _reap(self) -> None:
        used_idx = self.ring.used_idx()
        while self.last_used != used_idx:
            id_, len_ = self.ring.used_elem(self.last_used % self.size)
            if self.in_order:
                # §2.7.9: the entry names the last buffer of a batch; earlier ones are used
                # completely.
                if id_ not in self.by_head:
                    raise UsedRingViolation(f"queue {self.index}: used id {id_} is no "
                                            f"outstanding head")
                count = 0
                while True:
                    seq = self.avail_order.popleft()
                    buf = self.buffers[seq]
                    last = buf.head == id_
                    self._done(buf, len_ if last else buf.writable_len)
                    count += 1
                    if last:
                        break
                self.run_lengths.append(count)
                self.last_used = (self.last_used + count) & 0xFFFF
            else:
                seq = self.by_head.get(id_)
                if seq is None:
                    raise UsedRingViolation(f"queue {self.index}: used id {id_} is no "
                                            f"outstanding head")
                self.avail_order.remove(seq)
                self._done(self.buffers[seq], len_)
                self.last_used = (self.last_used + 1) & 0xFFFF

    def _done(self, buf: Buffer, written_len: int) -> None:
        if written_len != buf.writable_len:
            raise UsedRingViolation(f"queue {self.index} buffer {buf.seq}: used len "
                                    f"{written_len}, the test backend writes "
                                    f"{buf.writable_len}")
        rtl_seq = buf.seq % (2 * self.tb.reorder_depth)
        offset = 0
        for addr, length in buf.writable:
            want = pattern_bytes(self.index, rtl_seq, buf.head, offset, length)
            got = self.tb.mem.read(addr, length)
            if got != want:
                first = next(i for i in range(length) if got[i] != want[i])
                raise UsedRingViolation(f"queue {self.index} buffer {buf.seq} (head "
                                        f"{buf.head}): {length} bytes at {addr:#x} do not "
                                        f"hold the test pattern from byte {first} "
                                        f"({got[first:first + 8].hex()} instead of "
                                        f"{want[first:first + 8].hex()}); elements "
                                        f"{buf.writable}")
            offset += length
        del self.buffers[buf.seq]
        del self.by_head[buf.head]
        self.reaped.append(buf.seq)
        self._release(buf.seq, buf.head)

    def _release(self, seq: int, head: int | None = None) -> bool:
        """Give a buffer's descriptors back once both the driver (from memory) and the
        checker (from the link, which may lag by a decision read) have it as used, so the
        checker never sees a head reused while it still has it outstanding."""
        if head is not None:
            self.unreleased[seq] = head
        else:
            self.checker_done.add(seq)
        if seq in self.checker_done and seq in self.unreleased:
            self.checker_done.discard(seq)
            self.rd.free(self.unreleased.pop(seq))
            return True
        return False

    async def interrupt(self) -> None:
        """The queue's interrupt: reap until the callback is re-armed with nothing pending,
        then submit more (one handler at a time per queue)."""
        self.notifications += 1
        if self.busy:
            self.again = True
            return
        self.busy = True
        try:
            while True:
                self.again = False
                while True:
                    self._disable_cb()
                    self._reap()
                    if self._enable_cb():
                        break
                await self.refill()
                if not self.again:
                    break
        except BaseException as exc:
            self.tb.fail(exc)
        finally:
            self.busy = False

    # --- what the device did (from the link) ---------------------------------------------
    def device_write(self, addr: int, data: bytes) -> bool:
        """A MemWr from the device; True if it belongs to this queue's device area."""
        lay = self.layout
        end = addr + len(data)
        if not lay.device_addr <= addr < lay.avail_event + 2:
            return False
        if (addr, len(data)) == (lay.used_idx, 2):
            if self.idx_values >= len(self.idx_cmds):
                raise UsedRingViolation(f"queue {self.index}: used->idx written on the link "
                                        f"with no ctl_wr command for it")
            self.idx_cmds[self.idx_values]["value"] = int.from_bytes(data, "little")
            self.idx_values += 1
        elif (addr, len(data)) == (lay.avail_event, 2):
            self.checker.observe(AvailEventWrite(int.from_bytes(data, "little")))
        elif lay.used_entry(0) <= addr and end <= lay.used_entry(self.size):
            # Used elements; a DMA split (MPS, 4 KiB) may cut one in two TLPs.
            for i, byte in enumerate(data):
                offset = addr + i - lay.used_entry(0)
                slot, k = divmod(offset, 8)
                buf, mask = self.elem_bytes.get(slot, (bytearray(8), 0))
                buf[k] = byte
                mask |= 1 << k
                if mask == 0xFF:
                    self.elem_bytes.pop(slot, None)
                    self.checker.elem_written(slot, int.from_bytes(buf[:4], "little"),
                                              int.from_bytes(buf[4:], "little"))
                else:
                    self.elem_bytes[slot] = (buf, mask)
        else:
            raise UsedRingViolation(f"queue {self.index}: device wrote {len(data)} bytes at "
                                    f"{addr:#x} (device area {lay.device_addr:#x}): not a "
                                    f"used element, used->idx or avail_event")
        return True

    def link_notification(self) -> None:
        """A used buffer notification for this queue reached the link: the engine sends at
        most one per decision that asked for one (§2.7.7.2), and the checker's own account
        says whether one was owed."""
        self.link_notifications += 1
        if self.tb.trace:
            log.info("notification q%d #%d", self.index, self.link_notifications)
        if self.link_notifications > self.positive_decisions:
            raise UsedRingViolation(f"queue {self.index}: notification "
                                    f"{self.link_notifications}, but only "
                                    f"{self.positive_decisions} decisions asked for one")
        self.checker.notified()

    def decision_address(self) -> int:
        return self.layout.used_event if self.event_idx else self.layout.avail_flags

    def decided(self, k: int, value: int) -> None:
        """The ``k``-th decision read returned ``value``: it covers the used->idx writes
        done before the cycle its command was taken (the engine's protocol)."""
        taken = self.decision_cmds[k]
        covered = []
        while (self.covered < len(self.idx_cmds)
               and self.idx_cmds[self.covered]["done"] is not None
               and self.idx_cmds[self.covered]["done"] < taken):
            covered.append(self.idx_cmds[self.covered]["value"])
            self.covered += 1
        if not covered:
            raise UsedRingViolation(f"queue {self.index}: notification read at cycle {taken} "
                                    f"with no used->idx write to decide on")
        if None in covered:
            raise UsedRingViolation(f"queue {self.index}: a used->idx write decided on never "
                                    f"appeared on the link before the read")
        old = self.checker.used_idx
        if self.event_idx:
            positive = vring_need_event(value, covered[-1], old)
        else:
            positive = not value & 1
        self.positive_decisions += positive
        if self.tb.trace:
            log.info("decision q%d #%d (cycle %d): %d..%s with %#x: %s", self.index, k, taken,
                     old, covered, value, "notify" if positive else "no")
        for idx in covered:
            if self.event_idx:
                retired = self.checker.idx_written(idx, used_event=value)
            else:
                retired = self.checker.idx_written(idx, avail_flags=value)
            self.retired += retired
            released = [self._release(seq) for seq in retired]
        if any(released):       # the driver was waiting for these descriptors
            cocotb.start_soon(self.refill())

    def writable_hit(self, addr: int, length: int) -> bool:
        end = addr + length
        return any(a <= addr and end <= a + n for buf in self.buffers.values()
                   for a, n in buf.writable)


class VirtioDriver:
    """A Linux-like virtio_pci_modern + virtio_ring driver over the root complex."""

    def __init__(self, tb: "TB"):
        self.tb = tb
        self.caps: dict[int, dict] = {}
        self.pci_cfg_cap = None
        self.features = 0
        self.queues: dict[int, DriverQueue] = {}
        self.config_interrupts = 0
        self.config_changes = Event()

    def has(self, bit: int) -> bool:
        return bool(self.features >> bit & 1)

    # --- capabilities (virtio_pci_modern_probe) -------------------------------------------
    async def discover(self) -> None:
        tb = self.tb
        for cap_id, off in await tb.walk_caps():
            if cap_id != CapId.VENDOR:
                continue
            raw = await tb.cfg_bytes(off, 20)
            cap = unpack(VirtioPciCap, int.from_bytes(raw[:16], "little"))
            cap["extra"] = int.from_bytes(raw[16:20], "little")
            cap["at"] = off
            cfg_type = int(cap["cfg_type"])
            if cfg_type == PciCapCfgType.PCI_CFG.value:
                self.pci_cfg_cap = off
            self.caps.setdefault(cfg_type, cap)     # the first of each type counts
        self.common = self.caps[PciCapCfgType.COMMON_CFG.value]["offset"]
        self.isr = self.caps[PciCapCfgType.ISR_CFG.value]["offset"]
        self.device = self.caps[PciCapCfgType.DEVICE_CFG.value]["offset"]
        notify = self.caps[PciCapCfgType.NOTIFY_CFG.value]
        self.notify_base, self.notify_mult = notify["offset"], notify["extra"]
        self.notify_off: dict[int, int] = {}

    # --- register access -------------------------------------------------------------------
    async def read(self, offset: int) -> int:
        """A common configuration field with its natural access width (§4.1.3.1)."""
        width = CommonCfg.WIDTH[offset]
        if width == 8:
            return await self.mmio_read(self.common + offset, 4) \
                | await self.mmio_read(self.common + offset + 4, 4) << 32
        return await self.mmio_read(self.common + offset, width)

    async def write(self, offset: int, value: int) -> None:
        width = CommonCfg.WIDTH[offset]
        if width == 8:      # vp_iowrite64_twopart: low half first
            await self.mmio_write(self.common + offset, 4, value & 0xFFFF_FFFF)
            await self.mmio_write(self.common + offset + 4, 4, value >> 32)
            return
        await self.mmio_write(self.common + offset, width, value)

    async def mmio_read(self, offset: int, width: int) -> int:
        return int.from_bytes(await self.tb.bar.read(offset, width), "little")

    async def mmio_write(self, offset: int, width: int, value: int) -> None:
        await self.tb.bar.write(offset, value.to_bytes(width, "little"))

    async def add_status(self, bits: int) -> None:
        await self.write(CommonCfg.DEVICE_STATUS,
                         await self.read(CommonCfg.DEVICE_STATUS) | bits)

    async def notify(self, q: int) -> None:
        await self.mmio_write(self.notify_base + self.notify_off[q] * self.notify_mult, 2, q)

    async def read_isr(self) -> int:
        return await self.mmio_read(self.isr, 1)

    # --- bring-up (virtio_dev_probe, vp_find_vqs) --------------------------------------------
    async def reset(self, timeout_reads: int = 20000) -> list[int]:
        """Write 0 and wait for device_status to read 0 (vp_reset); returns the values read."""
        await self.write(CommonCfg.DEVICE_STATUS, 0)
        seen = []
        while True:
            seen.append(await self.read(CommonCfg.DEVICE_STATUS))
            if seen[-1] == 0:
                return seen
            if len(seen) > timeout_reads:
                raise AssertionError("device_status never read 0 after a reset")

    async def negotiate(self, wanted: int) -> bool:
        """ACKNOWLEDGE, DRIVER, features, FEATURES_OK; True if the device accepted them."""
        await self.add_status(ACK)
        await self.add_status(DRIVER)
        offered = 0
        for select in range(2):
            await self.write(CommonCfg.DEVICE_FEATURE_SELECT, select)
            offered |= await self.read(CommonCfg.DEVICE_FEATURE) << (32 * select)
        self.offered = offered
        self.features = offered & wanted
        for select in range(2):
            await self.write(CommonCfg.DRIVER_FEATURE_SELECT, select)
            await self.write(CommonCfg.DRIVER_FEATURE, (self.features >> (32 * select))
                             & 0xFFFF_FFFF)
        await self.add_status(FEATURES_OK)
        return bool(await self.read(CommonCfg.DEVICE_STATUS) & FEATURES_OK)

    async def setup(self, wanted: int, sizes: dict[int, int], workloads: dict[int, Workload]
                    ) -> None:
        """The whole bring-up with queues ``sizes`` (index -> size), then DRIVER_OK."""
        tb = self.tb
        assert await self.reset() == [0] or True
        tb.forget_queues()
        assert await self.negotiate(wanted | feature_mask(Feature.VERSION_1)), \
            "the device refused a valid feature set"
        msix = tb.msix
        if msix:
            await self.write(CommonCfg.CONFIG_MSIX_VECTOR, 0)
            assert await self.read(CommonCfg.CONFIG_MSIX_VECTOR) == 0
            tb.dev.msi_vectors[0].cb.clear()
            tb.dev.request_irq(0, self.config_interrupt)
        queues = {}
        for q, size in sizes.items():
            await self.write(CommonCfg.QUEUE_SELECT, q)
            maximum = await self.read(CommonCfg.QUEUE_SIZE)
            assert maximum >= size and not await self.read(CommonCfg.QUEUE_ENABLE)
            vector = 1 + q if msix else VIRTIO_MSI_NO_VECTOR
            dq = DriverQueue(self, q, size, workloads[q], vector)
            await self.write(CommonCfg.QUEUE_SIZE, size)
            await self.write(CommonCfg.QUEUE_DESC, dq.layout.desc_addr)
            await self.write(CommonCfg.QUEUE_DRIVER, dq.layout.driver_addr)
            await self.write(CommonCfg.QUEUE_DEVICE, dq.layout.device_addr)
            self.notify_off[q] = await self.read(CommonCfg.QUEUE_NOTIFY_OFF)
            if msix:
                await self.write(CommonCfg.QUEUE_MSIX_VECTOR, vector)
                assert await self.read(CommonCfg.QUEUE_MSIX_VECTOR) == vector
                tb.dev.msi_vectors[vector].cb.clear()
                tb.dev.request_irq(vector, dq.interrupt)
            queues[q] = dq
        for q in sizes:
            await self.write(CommonCfg.QUEUE_SELECT, q)
            await self.write(CommonCfg.QUEUE_ENABLE, 1)
        tb.set_queues(queues)
        self.queues = queues
        await self.add_status(DRIVER_OK)
        assert await self.read(CommonCfg.DEVICE_STATUS) == ACK | DRIVER | FEATURES_OK | DRIVER_OK

    async def config_interrupt(self) -> None:
        self.config_interrupts += 1
        self.config_changes.set()

    async def intx_handler(self) -> None:
        """vp_interrupt: on INTx, read (and so clear) the ISR; bit 0 -> every queue, bit 1 ->
        configuration change."""
        bridge = self.tb.bridge
        while True:
            if not bridge.intx_level:
                bridge.intx_changed.clear()
                await bridge.intx_changed.wait()
                continue
            isr = await self.read_isr()
            self.tb.isr_reads.append(isr)
            if isr & IsrStatus.DEVICE_CONFIG:
                await self.config_interrupt()
            if isr & IsrStatus.QUEUE:
                # One ISR bit for every queue: each queue owed a notification got it.
                for dq in list(self.tb.queues.values()):
                    if dq.positive_decisions > dq.link_notifications:
                        dq.link_notification()
                    cocotb.start_soon(dq.interrupt())
            if not isr:
                await ClockCycles(self.tb.dut.clk, 20)


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.params = json.loads(os.environ["DUT_PARAMS"])
        self.params.update(json.loads(os.environ.get("VIRTIO_TB", "{}")))
        p = self.params
        self.msix = p["msix_vectors"] > 0
        self.num_queues = p["num_queues"]
        self.reorder_depth = p["reorder_depth"]
        self.width = p["width"]
        self.seq_width = (self.reorder_depth - 1).bit_length() + 1
        self.rng = random.Random(random.getrandbits(32))    # cocotb seeds random from SEED
        self.map = TransportMap()
        Clock(dut.clk, CLK_NS, unit="ns").start()
        self.rc = RootComplex()
        self.bridge = ObservedBridge(dut, dut.clk, width=self.width, link_speed=p["link_speed"],
                                     link_width=p["link_width"], rng=self.rng)
        self.rc.make_port().connect(self.bridge)
        self.mem = SparseMemory()
        for base, size in (LOW_REGION, HIGH_REGION):
            self.rc.mem_address_space.register_region(GuestMemoryRegion(self.mem, base, size),
                                                      base)
        self.bridge.tx_observers.append(self._on_tx)
        self.bridge.rx_observers.append(self._on_rx)
        self.driver = VirtioDriver(self)
        self.queues: dict[int, DriverQueue] = {}
        self.decisions: dict[int, tuple[DriverQueue, int]] = {}   # tag -> (queue, k)
        self.wr_cmds: deque = deque()       # ctl_wr commands waiting for their done
        self.violation: BaseException | None = None
        self.msix_messages: list[int] = []
        self.isr_reads: list[int] = []
        self.device_tlps = 0            # DMA TLPs (MemRd/MemWr) from the device
        self.trace = os.environ.get("VIRTIO_TB_TRACE", "0") != "0"
        self.probe_ranges: list[tuple[int, int]] = []
        self.epoch_done: list = []
        self.dev = None
        for name in ("probe_rd__cmd__valid", "probe_wr__cmd__valid", "probe_wr__data__valid"):
            getattr(dut, name).value = 0
        dut.probe_rd__data__ready.value = 0
        dut.probe_wr__done__ready.value = 0
        for name, layout, handler in (
                ("done_mon", VirtqElemDone(self.seq_width), self._completed),
                ("wr_cmd_mon", WR_CMD_MON, self._wr_cmd),
                ("wr_done_mon", WR_DONE_MON, self._wr_done),
                ("rd_cmd_mon", RD_CMD_MON, self._rd_cmd)):
            getattr(dut, f"{name}__ready").value = 1
            cocotb.start_soon(self._drain(name, layout, handler))

    # --- set-up ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Reset, enumerate, enable memory and bus mastering, MSI-X vectors if built."""
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 10)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, self.reorder_depth + 100)   # engine flush, MSI-X table
        await self.rc.enumerate()
        self.dev = self.find_function()
        assert self.dev is not None, "the root complex did not find the function"
        await self.dev.enable_device()
        await self.dev.set_master()
        if self.msix:
            assert await self.dev.alloc_irq_vectors(1, self.params["msix_vectors"]) \
                == self.params["msix_vectors"]
            self.msi_data = {v.data: k for k, v in enumerate(self.dev.msi_vectors)}
            self.msi_addr = self.dev.msi_vectors[0].addr
        else:
            cocotb.start_soon(self.driver.intx_handler())
        await self.driver.discover()

    def find_function(self):
        def walk(bus):
            for d in bus.devices:
                if not d.is_bridge() and d.vendor_id == 0x1AF4:
                    return d
            for child in bus.children:
                found = walk(child)
                if found:
                    return found
            return None
        return walk(self.rc.host_bridge.bus)

    @property
    def bar(self):
        return self.dev.bar_window[0]

    async def cfg_read(self, index: int) -> int:
        return await self.rc.config_read_dword(self.dev.pcie_id, 4 * index)

    async def cfg_bytes(self, offset: int, length: int) -> bytes:
        out = b""
        for k in range(0, length, 4):
            out += (await self.cfg_read((offset + k) // 4)).to_bytes(4, "little")
        return out

    async def cfg_write(self, offset: int, data: bytes) -> None:
        await self.rc.config_write(self.dev.pcie_id, offset, data)

    async def walk_caps(self) -> list[tuple[int, int]]:
        caps, ptr, seen = [], (await self.cfg_read(Cfg.CAP_PTR // 4)) & 0xFC, set()
        while ptr:
            assert ptr >= 0x40 and ptr not in seen, f"bad capability pointer {ptr:#x}"
            seen.add(ptr)
            dw = await self.cfg_read(ptr // 4)
            caps.append((dw & 0xFF, ptr))
            ptr = (dw >> 8) & 0xFC
        return caps

    def forget_queues(self) -> None:
        self.queues = {}
        self.decisions.clear()
        self.wr_cmds.clear()

    def set_queues(self, queues: dict[int, DriverQueue]) -> None:
        self.queues = queues

    # --- observation -------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        if self.violation is None:
            self.violation = exc
            log.error("violation: %s", exc)
            log.error("engine stats %s; link notifications %s; MSI-X messages %d", self.stats(),
                      {q: dq.link_notifications for q, dq in self.queues.items()},
                      len(self.msix_messages))

    def check(self) -> None:
        if self.violation is not None:
            raise self.violation

    def _on_tx(self, hdr: dict, payload: list[int]) -> None:
        try:
            ft = hdr["fmt_type"]
            if self.trace:
                log.info("TLP %s", {k: v for k, v in hdr.items() if v} | (
                    {"data": model.dws_to_bytes(payload)[:16].hex()} if payload else {}))
            if model.kind(ft) != "address":
                return
            if model.has_data(ft):
                self.device_tlps += 1
                self._device_write(*mem_write_span(hdr, payload))
            else:
                self.device_tlps += 1
                self._device_read(hdr)
        except BaseException as exc:
            self.fail(exc)

    def _device_write(self, addr: int, data: bytes) -> None:
        if self.msix and addr == self.msi_addr:
            vector = self.msi_data[int.from_bytes(data, "little")]
            self.msix_messages.append(vector)
            for dq in self.queues.values():
                if dq.vector == vector:
                    dq.link_notification()
            return
        for dq in self.queues.values():
            if dq.device_write(addr, data):
                return
        if any(a <= addr and addr + len(data) <= a + n for a, n in self.probe_ranges):
            return
        for dq in self.queues.values():
            if dq.writable_hit(addr, len(data)):
                return
        raise UsedRingViolation(f"device wrote {len(data)} bytes at {addr:#x}: no used ring, "
                                f"device-writable buffer or MSI-X address")

    def _device_read(self, hdr: dict) -> None:
        addr, length = mem_read_span(hdr)
        if length != 2:
            return
        for dq in self.queues.values():
            if addr == dq.decision_address():
                self.decisions[hdr["tag"]] = (dq, dq.decision_tlps)
                dq.decision_tlps += 1
                return

    def _on_rx(self, tlp: Tlp) -> None:
        try:
            if not tlp.fmt_type.name.startswith("CPL") or tlp.tag not in self.decisions:
                return
            dq, k = self.decisions.pop(tlp.tag)
            data = bytes(tlp.data)
            lane = tlp.lower_address & 3
            if dq is self.queues.get(dq.index):
                dq.decided(k, int.from_bytes(data[lane:lane + 2], "little"))
        except BaseException as exc:
            self.fail(exc)

    async def _drain(self, name: str, layout, handler) -> None:
        """Take every entry of a harness tap FIFO as it comes (sleeping while it is empty)."""
        valid = getattr(self.dut, f"{name}__valid")
        payload = getattr(self.dut, f"{name}__payload")
        while True:
            await ReadOnly()
            if valid.value:
                try:
                    handler(unpack(layout, int(payload.value)))
                except BaseException as exc:
                    self.fail(exc)
                await RisingEdge(self.dut.clk)
            else:
                await RisingEdge(valid)

    def _wr_cmd(self, cmd: dict) -> None:
        owner = None
        for dq in self.queues.values():
            if (cmd["addr"], cmd["len"]) == (dq.layout.used_idx, 2):
                owner = dq
                dq.idx_cmds.append({"done": None, "value": None})
        self.wr_cmds.append(owner)

    def _wr_done(self, done: dict) -> None:
        if not self.wr_cmds:
            return          # a command from before the queues were set up
        owner = self.wr_cmds.popleft()
        if owner is not None and owner is self.queues.get(owner.index):
            for cmd in owner.idx_cmds:
                if cmd["done"] is None:
                    cmd["done"] = done["cycle"]
                    break

    def _rd_cmd(self, cmd: dict) -> None:
        for dq in self.queues.values():
            if cmd["addr"] == dq.decision_address():
                dq.decision_cmds.append(cmd["cycle"])

    def _completed(self, done: dict) -> None:
        try:
            dq = self.queues.get(done["queue"])
            if dq is None:
                return          # a queue not set up (a completion dropped by a reset)
            period = 2 * self.reorder_depth
            candidates = [s for s in dq.avail_order if s % period == done["seq"]
                          and dq.buffers[s].written_len is None]
            if len(candidates) != 1:
                raise UsedRingViolation(f"queue {dq.index}: completion of seq {done['seq']} "
                                        f"matches {len(candidates)} outstanding buffers")
            buf = dq.buffers[candidates[0]]
            if buf.head != done["head"]:
                raise UsedRingViolation(f"queue {dq.index}: completion of seq {done['seq']} "
                                        f"echoes head {done['head']}, not {buf.head}")
            buf.written_len = done["written_len"]
            dq.checker.completed(buf.seq, done["written_len"])
            dq.completed_order.append(buf.seq)
        except BaseException as exc:
            self.fail(exc)

    # --- status -----------------------------------------------------------------------------
    def counters(self) -> dict:
        return unpack(TransportCounters, int(self.dut.transport_counters.value))

    def stats(self) -> dict:
        return unpack(VirtqStats, int(self.dut.stats.value))

    def engine_error(self) -> dict:
        return unpack(VirtqError, int(self.dut.engine_error.value))

    async def wait_for(self, condition, what: str, timeout_us: float = TIMEOUT_US) -> None:
        waited = 0.0
        while not condition():
            self.check()
            if waited > timeout_us:
                raise AssertionError(f"timeout waiting for {what}: {self.progress()}")
            await Timer(1, unit="us")
            waited += 1
        self.check()

    def progress(self) -> str:
        return "; ".join(f"q{dq.index}: submitted {dq.submitted} reaped {len(dq.reaped)} "
                         f"outstanding {len(dq.buffers)}" for dq in self.queues.values()) \
            + f"; status {int(self.dut.device_status.value):#x}"

    # --- traffic ------------------------------------------------------------------------------
    async def run_traffic(self) -> None:
        for dq in self.queues.values():
            await dq.refill()
        await self.wait_for(lambda: all(dq.finished for dq in self.queues.values()),
                            "every request to be used")
        await self.settle()

    async def settle(self) -> None:
        """Let trailing decisions and notifications happen, then judge the end state."""
        await self.wait_for(lambda: not self.decisions and all(
            dq.covered == len(dq.idx_cmds) for dq in self.queues.values()),
            "trailing decisions")
        await ClockCycles(self.dut.clk, 300)
        self.check()

    def finish(self) -> dict:
        reports = {}
        for q, dq in self.queues.items():
            report = dq.checker.finish()
            assert dq.reaped == dq.retired, \
                f"queue {q}: the driver reaped {len(dq.reaped)} buffers in a different order " \
                f"from what the used ring said"
            reports[q] = report
        assert not int(self.dut.overflow.value), "done_mon FIFO overflowed"
        return reports

    # --- DMA probe ------------------------------------------------------------------------------
    async def probe(self, reads: list[tuple[int, int]], writes: list[tuple[int, bytes]]
                    ) -> tuple[list, list]:
        """Run DMA commands through the probe channels (all issued back to back); returns
        ``[(bytes, error)]`` for the reads and ``[error]`` for the writes."""
        dut, width = self.dut, self.width
        nbytes = width // 8
        rd_layout, wr_layout = read_data_layout(width), write_data_layout(width)
        results_rd, results_wr = [], []

        async def offer(valid, ready) -> None:
            """Hold ``valid`` (just set, right after a clock edge) until the beat is taken:
            the handshake is sampled in the same cycle, the transfer is the next edge."""
            valid.value = 1
            for _ in range(200_000):
                await ReadOnly()
                taken = bool(ready.value)
                await RisingEdge(dut.clk)
                if taken:
                    valid.value = 0
                    return
            raise AssertionError("DMA probe: a beat was never taken")

        async def issue(prefix, cmds):
            await RisingEdge(dut.clk)
            for addr, length in cmds:
                getattr(dut, f"{prefix}__cmd__payload").value = pack(
                    dma_cmd_layout, {"addr": addr, "len": length})
                await offer(getattr(dut, f"{prefix}__cmd__valid"),
                            getattr(dut, f"{prefix}__cmd__ready"))

        async def read_data():
            buf = bytearray()
            dut.probe_rd__data__ready.value = 1
            for _ in range(2_000_000):
                if len(results_rd) == len(reads):
                    break
                await RisingEdge(dut.clk)
                await ReadOnly()
                if not dut.probe_rd__data__valid.value:
                    continue
                beat = unpack(rd_layout, int(dut.probe_rd__data__payload.value))
                keep = beat["keep"]
                chunk = beat["data"].to_bytes(nbytes, "little")
                buf += bytes(chunk[i] for i in range(nbytes) if keep >> i & 1)
                if beat["last"]:
                    results_rd.append((bytes(buf), DmaError(beat["error"])))
                    buf = bytearray()
            await RisingEdge(dut.clk)
            dut.probe_rd__data__ready.value = 0

        async def write_data():
            await RisingEdge(dut.clk)
            for _, data in writes:
                beats = [data[i:i + nbytes] for i in range(0, len(data), nbytes)]
                for k, chunk in enumerate(beats):
                    dut.probe_wr__data__payload.value = pack(wr_layout, {
                        "data": int.from_bytes(chunk, "little"), "last": k == len(beats) - 1})
                    await offer(dut.probe_wr__data__valid, dut.probe_wr__data__ready)

        async def write_done():
            dut.probe_wr__done__ready.value = 1
            for _ in range(2_000_000):
                if len(results_wr) == len(writes):
                    break
                await RisingEdge(dut.clk)
                await ReadOnly()
                if dut.probe_wr__done__valid.value:
                    results_wr.append(DmaError(int(dut.probe_wr__done__payload.value) & 7))
            await RisingEdge(dut.clk)
            dut.probe_wr__done__ready.value = 0

        tasks = [cocotb.start_soon(issue("probe_rd", reads)),
                 cocotb.start_soon(issue("probe_wr", [(a, len(d)) for a, d in writes])),
                 cocotb.start_soon(write_data())]
        collectors = [cocotb.start_soon(read_data()), cocotb.start_soon(write_done())]
        for task in tasks + collectors:
            await task
        assert len(results_rd) == len(reads) and len(results_wr) == len(writes), \
            "DMA probe: commands never answered"
        return results_rd, results_wr


# =====================================================================================
# Tests
# =====================================================================================

async def started(dut) -> TB:
    tb = TB(dut)
    await tb.start()
    return tb


@cocotb.test()
async def enumeration_and_capabilities(dut):
    """Enumeration, the capability walk and the five virtio capabilities (§4.1.4), the
    identity (§4.1.2) and the common configuration as a driver first reads it."""
    tb = await started(dut)
    ids = await tb.cfg_read(0)
    assert ids == 0x1042_1AF4, f"vendor/device {ids:#x}"
    assert (await tb.cfg_read(2)) >> 8 == 0x010000 and (await tb.cfg_read(2)) & 0xFF >= 1
    caps = await tb.walk_caps()
    kinds = [c for c, _ in caps]
    want = [CapId.PM, CapId.PCIE] + ([CapId.MSIX] if tb.msix else []) + [CapId.VENDOR] * 5
    assert kinds == want, f"capabilities {kinds}"
    expected = {cap.body[1]: cap for cap in tb.map.vendor_caps()}
    for _, off in caps[-5:]:
        raw = await tb.cfg_bytes(off, 20)
        cap = unpack(VirtioPciCap, int.from_bytes(raw[:16], "little"))
        cfg_type = int(cap["cfg_type"])
        body = expected.pop(cfg_type)
        assert cap["cap_len"] == len(body.body) + 2 and cap["bar"] == 0
        assert raw[2:2 + len(body.body)] == bytes(body.body), f"cap {cfg_type} at {off:#x}"
    assert not expected, "every cfg_type present once"
    drv = tb.driver
    assert drv.notify_mult == 4 and drv.common == 0 and drv.isr == 0x1000
    # BAR0 size and type (§7.5.1.2.1): write all-ones, read back the size mask.
    bar0 = await tb.cfg_read(4)
    assert bar0 & 0x7 == (0x4 if tb.params["bar_64bit"] else 0x0)
    # What the driver reads first (§4.1.4.3).
    offered = 0
    for select in range(2):
        await drv.write(CommonCfg.DEVICE_FEATURE_SELECT, select)
        offered |= await drv.read(CommonCfg.DEVICE_FEATURE) << (32 * select)
    assert offered == TRANSPORT_FEATURES
    assert await drv.read(CommonCfg.NUM_QUEUES) == tb.num_queues
    assert await drv.read(CommonCfg.DEVICE_STATUS) == 0
    assert await drv.read(CommonCfg.CONFIG_MSIX_VECTOR) == VIRTIO_MSI_NO_VECTOR
    for q in range(tb.num_queues + 1):
        await drv.write(CommonCfg.QUEUE_SELECT, q)
        size = await drv.read(CommonCfg.QUEUE_SIZE)
        assert size == (tb.params["max_queue_size"] if q < tb.num_queues else 0)
    assert int.from_bytes(await tb.bar.read(drv.device + TestDeviceCfg.ID, 4), "little") \
        == TEST_DEVICE_ID
    tb.check()


@cocotb.test()
async def pci_cfg_window(dut):
    """VIRTIO_PCI_CAP_PCI_CFG (§4.1.4.9) as SeaBIOS uses it: bar, offset, length, then
    pci_cfg_data; every access matches the same access through BAR0."""
    tb = await started(dut)
    drv = tb.driver
    cap = drv.pci_cfg_cap

    async def window(offset: int, length: int, value: int | None = None, bar: int = 0):
        await tb.cfg_write(cap + 4, bytes([bar]))
        await tb.cfg_write(cap + 8, offset.to_bytes(4, "little"))
        await tb.cfg_write(cap + 12, length.to_bytes(4, "little"))
        if value is not None:
            await tb.cfg_write(cap + 16, value.to_bytes(length, "little"))
            return None
        raw = await tb.rc.config_read(tb.dev.pcie_id, cap + 16, length)
        return int.from_bytes(raw, "little")

    assert await window(CommonCfg.NUM_QUEUES, 2) == tb.num_queues
    await window(CommonCfg.DEVICE_FEATURE_SELECT, 4, 1)
    assert await window(CommonCfg.DEVICE_FEATURE, 4) == TRANSPORT_FEATURES >> 32
    await window(CommonCfg.QUEUE_SELECT, 2, 1)
    assert await drv.read(CommonCfg.QUEUE_SELECT) == 1, "the window wrote the register"
    await window(CommonCfg.QUEUE_SIZE, 2, 64)
    assert await drv.read(CommonCfg.QUEUE_SIZE) == 64
    assert await window(CommonCfg.QUEUE_SIZE, 2) == 64
    await window(CommonCfg.DEVICE_STATUS, 1, ACK)
    assert await drv.read(CommonCfg.DEVICE_STATUS) == ACK
    assert await window(CommonCfg.DEVICE_STATUS, 1) == ACK
    # The device configuration through the window reaches the backend.
    await window(drv.device + TestDeviceCfg.SCRATCH, 4, 0x5A5A_1234)
    assert int.from_bytes(await tb.bar.read(drv.device + TestDeviceCfg.SCRATCH, 4), "little") \
        == 0x5A5A_1234
    assert await window(drv.device + TestDeviceCfg.ID, 4) == TEST_DEVICE_ID
    # The ISR through the window is read-to-clear like through BAR0.
    assert await window(drv.isr, 1) == 0
    # Accesses that break §4.1.4.9.2 are refused and counted; nothing changes.
    before = tb.counters()["cfg_access_refused"]
    await window(CommonCfg.QUEUE_SELECT, 2, 3, bar=1)
    await window(CommonCfg.QUEUE_SELECT + 1, 2, 3)
    await window(CommonCfg.QUEUE_SELECT, 3, 3)
    await window(tb.map.msix_table_offset, 4, 0)
    await ClockCycles(dut.clk, 10)
    assert tb.counters()["cfg_access_refused"] - before == 4
    assert await drv.read(CommonCfg.QUEUE_SELECT) == 1
    tb.check()


@cocotb.test()
async def register_semantics(dut):
    """Device-level register rules: FEATURES_OK refusals (§2.2.1), queue_size refusals,
    read-only once enabled, MSI-X mapping failure (§4.1.5.1.2), notify to a disabled or
    nonexistent queue ignored and counted, the test device's configuration (config_generation,
    configuration change interrupt, negotiated features seen by the backend)."""
    tb = await started(dut)
    drv = tb.driver
    # FEATURES_OK refused without VERSION_1 and with a bit not offered; accepted otherwise.
    for wanted, accept in ((feature_mask(Feature.IN_ORDER), False),
                           (feature_mask(Feature.VERSION_1, Feature.RING_PACKED), False),
                           (feature_mask(Feature.VERSION_1, Feature.IN_ORDER), True)):
        await drv.reset()
        await drv.add_status(ACK | DRIVER)
        for select in range(2):
            await drv.write(CommonCfg.DRIVER_FEATURE_SELECT, select)
            await drv.write(CommonCfg.DRIVER_FEATURE, (wanted >> (32 * select)) & 0xFFFF_FFFF)
        await drv.add_status(FEATURES_OK)
        ok = bool(await drv.read(CommonCfg.DEVICE_STATUS) & FEATURES_OK)
        assert ok == accept, f"features {wanted:#x}: FEATURES_OK {ok}"
    assert tb.counters()["features_refused"] == 2
    # The backend sees the negotiated features.
    dev_cfg = drv.device
    lo = int.from_bytes(await tb.bar.read(dev_cfg + TestDeviceCfg.FEATURES_LO, 4), "little")
    hi = int.from_bytes(await tb.bar.read(dev_cfg + TestDeviceCfg.FEATURES_HI, 4), "little")
    assert lo | hi << 32 == feature_mask(Feature.VERSION_1, Feature.IN_ORDER)
    # Queue registers.
    await drv.write(CommonCfg.QUEUE_SELECT, 0)
    for bad in (0, 3, 100, min(2 * tb.params["max_queue_size"], 0xFFFF)):
        await drv.write(CommonCfg.QUEUE_SIZE, bad)
    assert await drv.read(CommonCfg.QUEUE_SIZE) == tb.params["max_queue_size"]
    await drv.write(CommonCfg.QUEUE_SIZE, 8)
    await drv.write(CommonCfg.QUEUE_DESC, LOW_REGION[0])
    await drv.write(CommonCfg.QUEUE_ENABLE, 1)
    await drv.write(CommonCfg.QUEUE_SIZE, 16)
    await drv.write(CommonCfg.QUEUE_DESC, 0x1000)
    assert await drv.read(CommonCfg.QUEUE_SIZE) == 8
    assert await drv.read(CommonCfg.QUEUE_DESC) == LOW_REGION[0]
    vectors = tb.params["msix_vectors"]
    await drv.write(CommonCfg.QUEUE_MSIX_VECTOR, vectors)        # one past the table
    assert await drv.read(CommonCfg.QUEUE_MSIX_VECTOR) == VIRTIO_MSI_NO_VECTOR
    if vectors:
        await drv.write(CommonCfg.QUEUE_MSIX_VECTOR, vectors - 1)
        assert await drv.read(CommonCfg.QUEUE_MSIX_VECTOR) == vectors - 1
    await ClockCycles(dut.clk, 20)
    assert tb.counters()["writes_ignored"] >= 4 + 2
    # Notifications for a nonexistent queue, a disabled queue, and before DRIVER_OK.
    drv.notify_off = {q: q for q in range(tb.num_queues + 2)}
    before = tb.counters()["notify_ignored"]
    tlps = tb.device_tlps
    for q in (0, 1, tb.num_queues, tb.num_queues + 1):
        await drv.notify(q)
    await ClockCycles(dut.clk, 200)
    assert tb.counters()["notify_ignored"] - before == 4
    assert tb.device_tlps == tlps, "an ignored notification made the device read memory"
    # Device configuration: scratch register, a configuration change (config_generation
    # moves; with DRIVER_OK a configuration change interrupt).
    await drv.setup(0, {1: 4}, {1: Workload(requests=4)})
    before = tb.counters()["notify_ignored"]
    await drv.notify(0)                 # queue 0 is not enabled in this setup
    await ClockCycles(dut.clk, 100)
    assert tb.counters()["notify_ignored"] - before == 1
    await tb.bar.write(dev_cfg + TestDeviceCfg.SCRATCH, (0xCAFE).to_bytes(4, "little"))
    assert int.from_bytes(await tb.bar.read(dev_cfg + TestDeviceCfg.SCRATCH, 4), "little") \
        == 0xCAFE
    generation = await drv.read(CommonCfg.CONFIG_GENERATION)
    interrupts = drv.config_interrupts
    await tb.bar.write(dev_cfg + TestDeviceCfg.CHANGE, (0x77).to_bytes(4, "little"))
    await tb.wait_for(lambda: drv.config_interrupts > interrupts, "config change interrupt")
    assert await drv.read(CommonCfg.CONFIG_GENERATION) != generation
    assert int.from_bytes(await tb.bar.read(dev_cfg + TestDeviceCfg.VALUE, 4), "little") == 0x77
    await tb.run_traffic()
    tb.finish()
    # The device reset clears the device configuration's read-write fields too.
    await drv.reset()
    assert int.from_bytes(await tb.bar.read(dev_cfg + TestDeviceCfg.SCRATCH, 4), "little") == 0
    tb.check()


def matrix(tb) -> list[tuple[int, str]]:
    """The IN_ORDER x EVENT_IDX x INDIRECT combinations a build runs."""
    combos = [feature_mask(*bits) for bits in (
        (Feature.IN_ORDER,), (), (Feature.IN_ORDER, Feature.EVENT_IDX, Feature.INDIRECT_DESC),
        (Feature.EVENT_IDX, Feature.INDIRECT_DESC), (Feature.IN_ORDER, Feature.INDIRECT_DESC),
        (Feature.EVENT_IDX,), (Feature.IN_ORDER, Feature.EVENT_IDX), (Feature.INDIRECT_DESC,))]
    return combos[:tb.params["matrix"]]


def describe(features: int) -> str:
    names = [n for n, b in (("IN_ORDER", Feature.IN_ORDER), ("EVENT_IDX", Feature.EVENT_IDX),
                            ("INDIRECT", Feature.INDIRECT_DESC)) if features >> b & 1]
    return "+".join(names) or "none"


@cocotb.test()
async def feature_matrix(dut):
    """Traffic on every queue at once through the RTL test backend (completions out of
    order) for each feature combination of the build, with a device reset between them:
    with IN_ORDER the used ring in avail order and batched, without it in completion order,
    every write checked by the golden model's checker; buffers hold the backend's pattern."""
    tb = await started(dut)
    requests = tb.params["requests"]
    for features in matrix(tb):
        sizes = {q: tb.rng.choice([8, 16, 32]) for q in range(tb.num_queues)}
        workloads = {q: Workload(requests=requests, depth=sizes[q]) for q in sizes}
        await tb.driver.setup(features, sizes, workloads)
        start = cocotb.utils.get_sim_time("us")
        await tb.run_traffic()
        reports = tb.finish()
        out_of_order = sum(any(b < a for a, b in zip(dq.completed_order,
                                                      dq.completed_order[1:]))
                           for dq in tb.queues.values())
        runs = [r.mean_run_length for r in reports.values()]
        log.info("%-28s %d queues x %d requests in %.1f us; mean run %s; kicks %s; "
                 "notifications %s", describe(features), len(sizes), requests,
                 cocotb.utils.get_sim_time("us") - start, [f"{r:.2f}" for r in runs],
                 [dq.kicks for dq in tb.queues.values()],
                 [r.notifications for r in reports.values()])
        assert out_of_order == len(sizes), "the test backend completed every queue out of order"
        if features >> Feature.IN_ORDER & 1:
            assert max(runs) > 1.0, "IN_ORDER batched no run at all"
        else:
            assert max(runs) == 1.0
    tb.check()


@cocotb.test()
async def reset_mid_traffic(dut):
    """device_status = 0 while buffers are in flight on every queue (§4.1.4.3.1): the
    device drains or aborts its DMA, reads 0 only when done, then is silent on the link
    until the driver starts it again, and serves fresh queues cleanly afterwards."""
    tb = await started(dut)
    drv = tb.driver
    features = feature_mask(Feature.IN_ORDER, Feature.EVENT_IDX)
    sizes = {q: 16 for q in range(tb.num_queues)}
    await drv.setup(features, sizes, {q: Workload(requests=1000, depth=16) for q in sizes})
    for dq in tb.queues.values():
        await dq.refill()
    await tb.wait_for(lambda: all(len(dq.reaped) >= 8 for dq in tb.queues.values()),
                      "traffic on every queue")
    in_flight = sum(len(dq.buffers) for dq in tb.queues.values())
    assert in_flight > 0
    for dq in tb.queues.values():
        dq.stopped = True
    seen = await drv.reset()
    quiet_from = tb.device_tlps
    messages = len(tb.msix_messages)
    log.info("reset with %d buffers in flight: device_status read %s", in_flight, seen)
    assert seen[-1] == 0 and all(v != 0 for v in seen[:-1])
    tb.forget_queues()
    await ClockCycles(dut.clk, 3000)
    assert tb.device_tlps == quiet_from, "DMA from the device after device_status read 0"
    assert len(tb.msix_messages) == messages, "an interrupt after the reset"
    assert tb.counters()["device_resets"] >= 2
    for q in range(tb.num_queues):
        await drv.write(CommonCfg.QUEUE_SELECT, q)
        assert await drv.read(CommonCfg.QUEUE_ENABLE) == 0
        assert await drv.read(CommonCfg.QUEUE_SIZE) == tb.params["max_queue_size"]
    # Clean service afterwards, with the rings in the same memory.
    requests = tb.params["requests"]
    await drv.setup(features, sizes, {q: Workload(requests=requests, depth=16) for q in sizes})
    await tb.run_traffic()
    tb.finish()


@cocotb.test()
async def bad_descriptor_loop(dut):
    """A descriptor chain that loops (robustness.md): DEVICE_NEEDS_RESET and a configuration
    change interrupt, the buffer before it used normally, the other queues unaffected, never
    a hang; a reset brings the device back."""
    tb = await started(dut)
    drv = tb.driver
    features = feature_mask(Feature.IN_ORDER)
    sizes = {q: 8 for q in range(tb.num_queues)}
    requests = tb.params["requests"]
    workloads = {q: Workload(requests=requests if q else 1, depth=8) for q in sizes}
    await drv.setup(features, sizes, workloads)
    bad_q = tb.queues[0]
    # One good buffer, then a head whose descriptor points back at itself.
    bad_q.add()
    good = bad_q.submitted
    loop_head = bad_q.rd._take(1)[0]
    bad_q.ring.set_desc(loop_head, RawDesc(bad_q._alloc(64), 64, 1, loop_head))   # NEXT
    bad_q.ring.set_avail_entry((bad_q.rd.avail_idx + bad_q.rd._added) % bad_q.size,
                               loop_head)
    bad_q.rd._added += 1
    await bad_q.publish()
    interrupts = drv.config_interrupts
    for dq in tb.queues.values():
        if dq is not bad_q:
            await dq.refill()
    await tb.wait_for(lambda: drv.config_interrupts > interrupts, "the configuration interrupt")
    status = await drv.read(CommonCfg.DEVICE_STATUS)
    assert status & NEEDS_RESET, f"device_status {status:#x}"
    error = tb.engine_error()
    assert error["queue"] == 0 and error["kind"] == VirtqErrorKind.CHAIN_TOO_LONG.value, error
    await tb.wait_for(lambda: len(bad_q.reaped) == good, "the buffer before the bad one")
    await tb.wait_for(lambda: all(dq.finished for dq in tb.queues.values() if dq is not bad_q),
                      "the other queues")
    await tb.settle()
    for q, dq in tb.queues.items():
        if dq is not bad_q:
            dq.checker.finish()
    # The driver resets the device (§2.1.2) and everything works again.
    await drv.setup(features, sizes, {q: Workload(requests=requests, depth=8) for q in sizes})
    assert not await drv.read(CommonCfg.DEVICE_STATUS) & NEEDS_RESET
    await tb.run_traffic()
    tb.finish()


PROBE_LOW = LOW_REGION[0] + 0x800_0000
PROBE_HIGH = HIGH_REGION[0] + 0x8000_0000


def random_transfers(rng, count: int, base: int, span: int) -> list[tuple[int, int]]:
    """Non-overlapping (addr, length) pairs: 1..6000 bytes, every alignment, many across
    4 KiB boundaries."""
    out, offset = [], 0
    for _ in range(count):
        length = rng.choice([rng.randint(1, 16), rng.randint(1, 600), rng.randint(600, 6000)])
        gap = rng.choice([0, rng.randrange(64), 4096 - (offset % 4096) - rng.randrange(1, 32)])
        offset += max(gap, 0) + rng.randrange(4)
        if offset + length > span:
            break
        out.append((base + offset, length))
        offset += length
    return out


@cocotb.test()
async def dma_end_to_end(dut):
    """The device's DMA engine through the real endpoint with the root complex's memory as
    the host: random lengths and alignments, below and above 4 GiB, Max_Payload_Size and
    Max_Read_Request_Size changed by the host between runs (every TLP checked against them
    and the 4 KiB rule), and Bus Master Enable off (nothing on the link, NO_BUS_MASTER)."""
    tb = await started(dut)
    rng = tb.rng
    pcie = next(off for cid, off in await tb.walk_caps() if cid == CapId.PCIE)
    probe_tlps = []

    def watch(hdr, payload):
        if model.kind(hdr["fmt_type"]) == "address" and any(
                b <= hdr["addr"] < b + 0x1000_0000 for b in (PROBE_LOW, PROBE_HIGH)):
            probe_tlps.append((hdr, mem_write_span(hdr, payload) if payload else None))
    tb.bridge.tx_observers.append(watch)
    tb.probe_ranges = [(PROBE_LOW, 0x1000_0000), (PROBE_HIGH, 0x1000_0000)]

    for mps, mrrs in ((0, 0), (1, 2), (0, 5), (1, 1)):
        devctl = await tb.cfg_read((pcie + PcieCap.DEV_CTL) // 4)
        devctl = (devctl & ~(0x7 << PcieCap.DEV_CTL_MPS_SHIFT | 0x7 << PcieCap.DEV_CTL_MRRS_SHIFT)
                  | mps << PcieCap.DEV_CTL_MPS_SHIFT | mrrs << PcieCap.DEV_CTL_MRRS_SHIFT)
        await tb.cfg_write(pcie + PcieCap.DEV_CTL, (devctl & 0xFFFF).to_bytes(2, "little"))
        base = rng.choice([PROBE_LOW, PROBE_HIGH]) + rng.randrange(16) * 0x10_0000
        reads = random_transfers(rng, 24, base, 0x8_0000)
        writes = random_transfers(rng, 24, base + 0x10_0000, 0x8_0000)
        for addr, length in reads:
            tb.mem.write(addr, rng.randbytes(length))
        writes = [(addr, rng.randbytes(length)) for addr, length in writes]
        probe_tlps.clear()
        got_rd, got_wr = await tb.probe(reads, writes)
        # A read after the writes: its completion comes after they reached memory (§2.4.1).
        (_, error), = (await tb.probe([(writes[-1][0], 1)], []))[0]
        assert error == DmaError.NONE
        for (addr, length), (data, error) in zip(reads, got_rd):
            assert error == DmaError.NONE and data == tb.mem.read(addr, length), \
                f"read {length} bytes at {addr:#x} (MPS {128 << mps}, MRRS {128 << mrrs})"
        for (addr, data), error in zip(writes, got_wr):
            assert error == DmaError.NONE and tb.mem.read(addr, len(data)) == data, \
                f"write {len(data)} bytes at {addr:#x} (MPS {128 << mps})"
        for hdr, span in probe_tlps:
            size = 4 * hdr["length"]
            assert hdr["addr"] // 4096 == (hdr["addr"] + size - 1) // 4096, "4 KiB crossed"
            assert (hdr["addr"] >= 1 << 32) == (hdr["fmt_type"] in (0x20, 0x60)), \
                "3 DW header below 4 GiB, 4 DW above (§2.2.4.1)"
            if span is not None:
                assert size <= 128 << mps, f"MemWr of {size} bytes with MPS {128 << mps}"
            else:
                assert size <= 128 << mrrs, f"MemRd of {size} bytes with MRRS {128 << mrrs}"
        kinds = {span is None for _, span in probe_tlps}
        log.info("MPS %d, MRRS %d: %d reads, %d writes, %d TLPs", 128 << mps, 128 << mrrs,
                 len(reads), len(writes), len(probe_tlps))
        assert kinds == {True, False}

    # Bus Master Enable off: commands end with NO_BUS_MASTER and nothing reaches the link.
    await tb.dev.set_master(False)
    probe_tlps.clear()
    got_rd, got_wr = await tb.probe([(PROBE_LOW, 100), (PROBE_HIGH + 3, 5000)],
                                    [(PROBE_LOW + 0x1000, b"x" * 300)])
    assert [e for _, e in got_rd] == [DmaError.NO_BUS_MASTER] * 2
    assert got_wr == [DmaError.NO_BUS_MASTER]
    await ClockCycles(dut.clk, 200)
    assert not probe_tlps, "a TLP left with Bus Master Enable clear"
    await tb.dev.set_master(True)
    (_, error), = (await tb.probe([(PROBE_LOW, 8)], []))[0]
    assert error == DmaError.NONE
    tb.check()
