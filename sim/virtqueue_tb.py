"""cocotb testbench for the virtqueue engine (through :mod:`sim.virtqueue_harness`).

:class:`VirtqueueTB` builds the clock, the DMA port model serving host memory
(:class:`~sim.dma_port_model.DmaPortModel`), a Linux-like driver side per queue
(:class:`QueueDriver`, over :class:`~sim.model.split_ring.RingDriver`) and a Python backend
(:class:`PythonBackend`), and judges the engine with the golden model's checker
(:class:`~sim.model.virtqueue.UsedRingChecker`), fed from what crosses the DUT's ports:

* every write the engine makes is classified by address: a used ring element, ``used->idx``,
  ``avail_event``, or a violation (the device writes nothing else, ``docs/robustness.md``);
* a ``used->idx`` write is handed to the checker together with the ``used_event`` /
  ``avail->flags`` value of the read that decided its notification: the first such read of
  that queue whose command was taken after the write's ``done`` (the engine's protocol);
* backend completions (``done_mon``) and notifications (``notify``) go to the checker as they
  happen; elements (``elem_mon``) are compared with the chains the driver built
  (:func:`~sim.model.virtqueue.walk_chain`), in avail order, with the expected seq.

Buffers the checker reports used are given back to the driver, which refills the queue
(up to its queue depth) and kicks like Linux does (with EVENT_IDX only when ``avail_event``
asks for it). Everything random comes from one ``random.Random`` seeded from cocotb's seed.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import random
from collections import deque
from dataclasses import dataclass

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from hdl.virtio.spec import vring_need_event
from hdl.virtio.test_backend import pattern_bytes
from hdl.virtio.virtqueue_engine import VirtqueueEngine
from hdl.virtio.virtqueue_port import VirtqConfig, VirtqElemDesc, VirtqElemDone, VirtqError, \
    VirtqFeatures, VirtqStats
from sim.dma_port_model import DmaPortModel, FastSignal, LayoutCodec, ReadRecord, WriteRecord
from sim.layout import pack, unpack
from sim.model.memory import SparseMemory
from sim.model.split_ring import SplitRing, SplitRingLayout, RingDriver
from sim.model.virtqueue import (
    AvailEventWrite, UsedElemWrite, UsedIdxWrite, UsedNotify, UsedRingChecker,
    UsedRingViolation, walk_chain,
)

__all__ = ["VirtqueueTB", "QueueDriver", "PythonBackend", "Workload", "dut_params"]

log = logging.getLogger(__name__)

RING_BASE = 0x1000_0000         # queue q's rings at RING_BASE * (q + 1)
RING_SPAN = 0x1000_0000
DATA_BASE = 0x40_0000_0000      # buffers and indirect tables
DATA_SPAN = 0x1_0000_0000       # per queue


def dut_params() -> dict:
    """The parameters the design was built with (``DUT_PARAMS`` from sim.runner)."""
    return json.loads(os.environ.get("DUT_PARAMS", "{}"))


@dataclass
class Workload:
    """What a queue's driver submits.

    ``requests`` buffers in total, at most ``queue_depth`` outstanding; each buffer has
    ``readable`` (range) device-readable and ``writable`` (range) device-writable elements
    of ``length`` (range) bytes; with probability ``indirect`` it goes through an indirect
    table (when negotiated). ``chunk`` buffers are added before each publish (1: publish
    every buffer on its own). ``shape``, when given, fixes every buffer's elements as
    ``(length, write)`` pairs instead (a virtio-blk read: 16, 4096 and 1 bytes).
    """
    requests: int = 100
    queue_depth: int = 8
    readable: tuple[int, int] = (0, 2)
    writable: tuple[int, int] = (0, 2)
    length: tuple[int, int] = (1, 64)
    indirect: float = 0.0
    chunk: int = 1 << 30
    shape: tuple[tuple[int, bool], ...] | None = None   # fixed (length, write) elements


@dataclass
class _Expected:
    seq: int
    head: int
    descriptors: tuple
    writable_len: int
    writable: list                  # (addr, len) of the device-writable elements


class QueueDriver:
    """The driver side of one queue: builds buffers, publishes, kicks, reaps.

    It behaves like Linux's virtio_ring for what the engine can observe: descriptors from a
    free list (sequential under IN_ORDER), ``avail->idx`` published after the ring entries,
    a kick after publishing unless EVENT_IDX says the device does not want one, and used
    buffers taken back as the used ring returns them.
    """

    def __init__(self, tb: VirtqueueTB, index: int, size: int, workload: Workload):
        self.tb = tb
        self.index = index
        self.size = size
        self.workload = workload
        self.layout = SplitRingLayout.contiguous(RING_BASE * (index + 1), size)
        self.ring = SplitRing(tb.mem, self.layout)
        self.rd = RingDriver(self.ring, in_order=tb.in_order)
        self.checker = UsedRingChecker(size, in_order=tb.in_order, event_idx=tb.event_idx)
        self.data_next = DATA_BASE + DATA_SPAN * index
        self.expected: dict[int, _Expected] = {}
        self.submitted = 0
        self.used = 0
        self.dispatched = 0             # elements seen on elem_mon
        self.dispatch_cycles: list[int] = []
        self.by_rtl_seq: dict[int, int] = {}    # outstanding RTL seq -> checker seq
        self.pending_idx: deque[WriteRecord] = deque()
        self.deciding: deque[tuple[ReadRecord, list[WriteRecord]]] = deque()
        self.used_writes: list = []     # device writes in order, for exact comparisons
        self.notifications = 0
        self.written: dict[int, int] = {}       # checker seq -> written_len reported
        self.last_completed = -1
        self.out_of_order = 0                   # completions before an older element's
        self.stopped = False            # stop submitting (reset or error tests)
        self.on_used = None             # optional callback(list of checker seqs)

    # --- building buffers --------------------------------------------------------------
    def _alloc(self, length: int, align: int = 8) -> int:
        addr = (self.data_next + align - 1) // align * align
        self.data_next = addr + length
        if self.data_next > DATA_BASE + DATA_SPAN * (self.index + 1):
            self.data_next = DATA_BASE + DATA_SPAN * self.index
            return self._alloc(length, align)
        return addr

    def add(self, elements: list[tuple[int, int, bool]], *, indirect: bool = False) -> int:
        """Add one buffer (not yet published); returns its checker seq."""
        table = self._alloc(16 * len(elements), 16) if indirect else None
        head = self.rd.add(elements, indirect_table=table)
        descriptors = walk_chain(self.ring, head, indirect_desc=self.tb.indirect,
                                 max_chain_len=self.tb.max_chain_len)
        writable = [(a, n) for a, n, w in elements if w]
        wlen = sum(n for _, n in writable)
        seq = self.checker.available(head, wlen)
        self.expected[seq] = _Expected(seq, head, descriptors, wlen, writable)
        self.submitted += 1
        return seq

    def random_buffer(self) -> list[tuple[int, int, bool]]:
        rng, w = self.tb.rng, self.workload
        if w.shape is not None:
            return [(self._alloc(length), length, write) for length, write in w.shape]
        nr = rng.randint(*w.readable)
        nw = rng.randint(*w.writable)
        if nr + nw == 0:
            nr = 1
        out = []
        for write in [False] * nr + [True] * nw:
            length = rng.randint(*w.length)
            out.append((self._alloc(length), length, write))
        return out

    def descriptors_needed(self, elements, indirect: bool) -> int:
        return 1 if indirect else len(elements)

    def publish(self) -> None:
        """Publish what was added and kick if the device asks for it (§2.7.13.3-4)."""
        old = self.rd.avail_idx
        new = self.rd.publish()
        if new == old:
            return
        if self.tb.event_idx:
            if vring_need_event(self.ring.avail_event(), new, old):
                self.tb.kick(self.index)
        else:
            self.tb.kick(self.index)

    def refill(self) -> None:
        """Top the queue up to its depth with random buffers, publishing every ``chunk``."""
        w = self.workload
        added = 0
        while (not self.stopped and self.submitted < w.requests
               and self.submitted - self.used < w.queue_depth):
            elements = self.random_buffer()
            indirect = self.tb.indirect and self.tb.rng.random() < w.indirect
            if not indirect:
                elements = elements[:self.size]     # a direct chain fits its table
            if self.rd.num_free < self.descriptors_needed(elements, indirect):
                break
            self.add(elements, indirect=indirect)
            added += 1
            if added % w.chunk == 0:
                self.publish()
        self.publish()

    @property
    def finished(self) -> bool:
        return self.used >= self.workload.requests

    # --- what the device did -----------------------------------------------------------
    def element_seen(self, beats: list[dict]) -> None:
        """An element crossed the backend port: it must be the next one in avail order."""
        seq = self.dispatched
        self.dispatched += 1
        self.dispatch_cycles.append(self.tb.dma.cycle)
        exp = self.expected.get(seq)
        if exp is None:
            raise UsedRingViolation(f"queue {self.index}: element {seq} dispatched but the "
                                    f"driver made only {self.submitted} available")
        first = beats[0]
        rtl_seq = seq % (2 * self.tb.reorder_depth)
        if first["head"] != exp.head or first["seq"] != rtl_seq:
            raise UsedRingViolation(
                f"queue {self.index}: element {seq} has head {first['head']} seq "
                f"{first['seq']}, expected head {exp.head} seq {rtl_seq}")
        got = tuple((b["addr"], b["len"], bool(b["write"])) for b in beats)
        want = tuple((d.addr, d.len, d.write) for d in exp.descriptors)
        if got != want:
            raise UsedRingViolation(f"queue {self.index}: element {seq} (head {exp.head}) "
                                    f"has descriptors {got}, the chain is {want}")
        self.by_rtl_seq[rtl_seq] = seq

    def completed(self, rtl_seq: int, head: int, written_len: int) -> None:
        seq = self.by_rtl_seq.pop(rtl_seq, None)
        if seq is None:
            raise UsedRingViolation(f"queue {self.index}: completion of seq {rtl_seq}, "
                                    f"which is not outstanding")
        if self.expected[seq].head != head:
            raise UsedRingViolation(f"queue {self.index}: completion of seq {rtl_seq} "
                                    f"echoes head {head}, not {self.expected[seq].head}")
        self.checker.completed(seq, written_len)
        self.written[seq] = written_len
        if seq < self.last_completed:
            self.out_of_order += 1
        self.last_completed = max(self.last_completed, seq)

    def device_write(self, record: WriteRecord) -> None:
        layout = self.layout
        addr, data = record.addr, record.data
        if addr == layout.used_idx and len(data) == 2:
            self.pending_idx.append(record)
        elif addr == layout.avail_event and len(data) == 2:
            value = int.from_bytes(data, "little")
            self.checker.avail_event_written(value)
            self.used_writes.append(AvailEventWrite(value))
        elif (layout.used_entry(0) <= addr < layout.used_entry(self.size)
              and (addr - layout.used_entry(0)) % 8 == 0 and len(data) % 8 == 0
              and addr + len(data) <= layout.used_entry(self.size)):
            slot = (addr - layout.used_entry(0)) // 8
            for i in range(len(data) // 8):
                id_ = int.from_bytes(data[8 * i:8 * i + 4], "little")
                len_ = int.from_bytes(data[8 * i + 4:8 * i + 8], "little")
                self.checker.elem_written(slot + i, id_, len_)
                self.used_writes.append(UsedElemWrite(slot + i, id_, len_))
        else:
            raise UsedRingViolation(f"queue {self.index}: device wrote {len(data)} bytes at "
                                    f"{addr:#x}, outside used->ring / used->idx / avail_event")

    def decision_read(self, record: ReadRecord) -> None:
        """The engine read used_event / avail->flags: the read decides for the used->idx
        writes whose done was taken before this read's command was."""
        covered = []
        while (self.pending_idx and self.pending_idx[0].done_cycle is not None
               and self.pending_idx[0].done_cycle < record.cycle):
            covered.append(self.pending_idx.popleft())
        if not covered:
            raise UsedRingViolation(f"queue {self.index}: notification read at cycle "
                                    f"{record.cycle} with no used->idx write to decide on")
        self.deciding.append((record, covered))

    def decision_made(self, record: ReadRecord) -> None:
        """The read's data arrived: from now on the engine knows (and may notify)."""
        decided, covered = self.deciding.popleft()
        assert decided is record
        value = int.from_bytes(record.data, "little")
        for write in covered:
            idx = int.from_bytes(write.data, "little")
            if self.tb.event_idx:
                event = UsedIdxWrite(idx, used_event=value)
            else:
                event = UsedIdxWrite(idx, avail_flags=value)
            self.used_writes.append(event)
            self._reap(self.checker.observe(event))

    def _reap(self, seqs: list[int]) -> None:
        for seq in seqs:
            exp = self.expected.pop(seq)
            if self.tb.check_pattern:
                self.tb.check_buffer(self.index, seq, exp)
            self.rd.free(exp.head)
            self.used += 1
        if seqs:
            if self.on_used is not None:
                self.on_used(seqs)
            self.tb.driver_policy(self)
            self.refill()

    def notified(self) -> None:
        self.notifications += 1
        self.checker.notified()
        self.used_writes.append(UsedNotify())


class PythonBackend:
    """Completes elements from the ``elem`` port after a random delay, in any order.

    ``delay`` is a (low, high) range of cycles; ``partial`` the probability that an element
    with writable bytes reports fewer bytes written than it has; ``elem_ready`` the
    probability of taking a beat. While not ``active`` (device reset) it takes every beat
    and drops it, and completes nothing.
    """

    def __init__(self, tb: VirtqueueTB, *, delay=(0, 40), partial: float = 0.0,
                 elem_ready: float = 0.9):
        self.tb = tb
        self.delay = delay
        self.partial = partial
        self.elem_ready = elem_ready
        self.beats: list[dict] = []
        self.waiting: list[tuple[int, dict]] = []     # (due cycle, done payload)
        self.offer: dict | None = None
        self.ready = False
        self.active = True
        self.completed = 0

    def reset(self) -> None:
        self.beats.clear()
        self.waiting.clear()
        self.offer = None

    def step(self, cycle: int) -> None:
        tb, rng, sig = self.tb, self.tb.rng, self.tb.sig
        if self.ready and self.active and sig["elem__valid"].get():
            beat = tb.elem_layout.unpack(sig["elem__payload"].get())
            self.beats.append(beat)
            if beat["last"]:
                self._finish(self.beats, cycle)
                self.beats = []
        if self.offer is not None and sig["done__ready"].get():
            self.offer = None
            self.completed += 1
        if self.offer is None and self.waiting and self.active:
            due = [i for i, (when, _) in enumerate(self.waiting) if when <= cycle]
            if due:
                _, self.offer = self.waiting.pop(rng.choice(due))
                sig["done__payload"].set(tb.done_layout.pack(self.offer))
        sig["done__valid"].set(int(self.offer is not None))
        # Under a device reset the backend takes and drops what the engine still hands out.
        self.ready = (not self.active or self.elem_ready >= 1.0
                      or rng.random() < self.elem_ready)
        sig["elem__ready"].set(int(self.ready))

    def _finish(self, beats: list[dict], cycle: int) -> None:
        rng = self.tb.rng
        wlen = sum(b["len"] for b in beats if b["write"])
        written = wlen
        if wlen and rng.random() < self.partial:
            written = rng.randrange(wlen)
        low, high = self.delay
        first = beats[0]
        self.waiting.append((cycle + rng.randint(low, high), {
            "queue": first["queue"], "seq": first["seq"], "head": first["head"],
            "written_len": written}))


class VirtqueueTB:
    """One engine under test, its host memory, drivers, backend and checkers."""

    def __init__(self, dut, *, seed: int | None = None):
        self.dut = dut
        self.params = dut_params()
        # The engine's parameters: those the harness was built with, else its defaults.
        defaults = {name: p.default for name, p in
                    inspect.signature(VirtqueueEngine.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        engine = dict(defaults, **self.params.get("engine", {}))
        self.num_queues = engine["num_queues"]
        self.reorder_depth = engine["reorder_depth"]
        self.width = engine["data_width"]
        self.max_chain_len = engine["max_chain_len"]
        self.seq_width = (self.reorder_depth - 1).bit_length() + 1
        self.elem_layout = LayoutCodec(VirtqElemDesc(self.seq_width))
        self.done_layout = LayoutCodec(VirtqElemDone(self.seq_width))
        seed = cocotb.RANDOM_SEED if seed is None else seed
        self.rng = random.Random(seed)
        self.mem = SparseMemory()
        self.dma = DmaPortModel(dut.clk, self.mem, rng=self.rng, width=self.width)
        for name in ("ring_rd", "desc_rd"):
            self.dma.add_read_channel(dut, name)
        for name in ("ctl_wr", "be_wr"):
            self.dma.add_write_channel(dut, name)
        self.dma.write_hooks.append(self._on_write)
        self.dma.read_hooks.append(self._on_read)
        self.dma.read_done_hooks.append(self._on_read_done)
        self.dma.cycle_hooks.append(self._step)
        self.backend = PythonBackend(self)
        self.queues: list[QueueDriver | None] = [None] * self.num_queues
        self.in_order = self.event_idx = self.indirect = False
        self.check_pattern = False
        self.notify_ready = 0.9
        self.doorbells: deque[int] = deque()
        self.doorbell_offer: int | None = None
        self.elem_beats: dict[int, list] = {}
        self.violation: BaseException | None = None
        self.driver_policy = lambda driver: None
        self.rtl_backend_writes: list[WriteRecord] = []
        self.writable_ranges: dict[tuple[int, int], tuple[int, int]] = {}
        self.notify_taken = False
        self.trace = os.environ.get("VQ_TRACE", "0") != "0"
        self.driven = ("doorbell__valid", "doorbell__payload", "notify__ready", "elem__ready",
                       "done__valid", "done__payload")
        monitored = ("elem__valid", "elem__payload", "done__ready", "elem_mon__valid",
                     "elem_mon__payload", "done_mon__valid", "done_mon__payload",
                     "notify__valid", "notify__payload")
        self.sig = {name: FastSignal(getattr(dut, name)) for name in self.driven + monitored}

    # --- set-up ------------------------------------------------------------------------
    async def start(self) -> None:
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 4, unit="ns").start())
        for name, value in (("rst", 1), ("reset", 0), ("be_reset", 0), ("driver_ok", 0),
                            ("backend_sel", 0), ("features", 0), ("queue_config", 0),
                            ("elem_mon__ready", 1), ("done_mon__ready", 1)):
            getattr(dut, name).value = value
        for name in self.driven:
            self.sig[name].set(0)
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        cocotb.start_soon(self.dma.run())
        await self.wait_for(lambda: not self._engine_busy_after_reset(), 5000,
                            "the engine to leave its power-up flush")

    def _engine_busy_after_reset(self) -> bool:
        # The reorder buffers flush for reorder_depth cycles after rst; nothing to observe.
        return self.dma.cycle < self.reorder_depth + 4

    def configure(self, *, in_order: bool, event_idx: bool, indirect: bool,
                  sizes: list[int | None], workloads: list[Workload] | Workload | None = None,
                  rtl_backend: bool = False) -> None:
        """Negotiate features, set the queues up (None: disabled) and set DRIVER_OK."""
        self.in_order, self.event_idx, self.indirect = in_order, event_idx, indirect
        self.check_pattern = rtl_backend
        dut = self.dut
        dut.features.value = pack(VirtqFeatures, {"in_order": int(in_order),
                                                  "event_idx": int(event_idx),
                                                  "indirect_desc": int(indirect)})
        dut.backend_sel.value = int(rtl_backend)
        if not isinstance(workloads, list):
            workloads = [workloads or Workload()] * len(sizes)
        config = 0
        entry_bits = 16 + 1 + 64 * 3
        for q, size in enumerate(sizes):
            if size is None:
                self.queues[q] = None
                continue
            driver = QueueDriver(self, q, size, workloads[q])
            self.queues[q] = driver
            config |= pack(VirtqConfig, {
                "size": size, "enable": 1, "desc": driver.layout.desc_addr,
                "driver": driver.layout.driver_addr,
                "device": driver.layout.device_addr}) << (entry_bits * q)
        for q in range(len(sizes), self.num_queues):
            self.queues[q] = None
        dut.queue_config.value = config
        dut.driver_ok.value = 1
        self.backend.active = True

    # --- per-cycle work (called by the DMA model's loop) -------------------------------
    def _step(self, cycle: int) -> None:
        try:
            self._monitor(cycle)
        except BaseException as exc:        # keep the first failure for the test to raise
            if self.violation is None:
                self.violation = exc
            raise

    def _monitor(self, cycle: int) -> None:
        sig = self.sig
        if sig["elem_mon__valid"].get():
            beat = self.elem_layout.unpack(sig["elem_mon__payload"].get())
            beats = self.elem_beats.setdefault(beat["queue"], [])
            beats.append(beat)
            self._trace("elem %s", beat)
            if self.check_pattern and beat["write"] and beat["len"]:
                self.writable_ranges[(beat["queue"], beat["addr"])] = (
                    beat["addr"], beat["addr"] + beat["len"])
            if beat["last"]:
                del self.elem_beats[beat["queue"]]
                self._driver(beat["queue"]).element_seen(beats)
        if sig["done_mon__valid"].get():
            done = self.done_layout.unpack(sig["done_mon__payload"].get())
            self._trace("done %s", done)
            self._driver(done["queue"]).completed(done["seq"], done["head"],
                                                  done["written_len"])
        if self.notify_taken and sig["notify__valid"].get():
            q = sig["notify__payload"].get()
            self._trace("notify %d", q)
            self._driver(q).notified()
        self.notify_taken = self.notify_ready >= 1.0 or self.rng.random() < self.notify_ready
        sig["notify__ready"].set(int(self.notify_taken))
        self.doorbell_offer = self.doorbells.popleft() if self.doorbells else None
        if self.doorbell_offer is not None:
            sig["doorbell__payload"].set(self.doorbell_offer)
        sig["doorbell__valid"].set(int(self.doorbell_offer is not None))
        self.backend.step(cycle)

    def _driver(self, q: int) -> QueueDriver:
        driver = self.queues[q] if q < len(self.queues) else None
        if driver is None:
            raise UsedRingViolation(f"activity on queue {q}, which is not set up")
        return driver

    def _queue_of(self, addr: int) -> QueueDriver | None:
        q = addr // RING_SPAN - 1
        if 0 <= q < self.num_queues and addr < DATA_BASE:
            return self.queues[q]
        return None

    def _trace(self, message: str, *args) -> None:
        if self.trace:
            self.dut._log.info("[%d] " + message, self.dma.cycle, *args)

    def _on_write(self, record: WriteRecord) -> None:
        self._trace("write %s %#x %s", record.channel, record.addr, record.data.hex())
        try:
            if record.channel == "be_wr":
                self._backend_write(record)
                return
            driver = self._queue_of(record.addr)
            if driver is None:
                raise UsedRingViolation(f"engine wrote {len(record.data)} bytes at "
                                        f"{record.addr:#x}, outside every queue's rings")
            driver.device_write(record)
        except BaseException as exc:
            if self.violation is None:
                self.violation = exc
            raise

    def _on_read(self, record: ReadRecord) -> None:
        self._trace("read %s %#x+%d -> %s", record.channel, record.addr, record.length,
                    record.data[:16].hex())
        try:
            if record.channel != "ring_rd" or record.length != 2:
                return
            driver = self._queue_of(record.addr)
            if driver is None:
                return
            layout = driver.layout
            decision = layout.used_event if self.event_idx else layout.avail_flags
            if record.addr == decision:
                driver.decision_read(record)
        except BaseException as exc:
            if self.violation is None:
                self.violation = exc
            raise

    def _on_read_done(self, record: ReadRecord) -> None:
        try:
            if record.channel != "ring_rd" or record.length != 2:
                return
            driver = self._queue_of(record.addr)
            if driver is not None and driver.deciding and driver.deciding[0][0] is record:
                driver.decision_made(record)
        except BaseException as exc:
            if self.violation is None:
                self.violation = exc
            raise

    def _backend_write(self, record: WriteRecord) -> None:
        end = record.addr + len(record.data)
        for low, high in self.writable_ranges.values():
            if low <= record.addr and end <= high:
                return
        raise UsedRingViolation(f"test backend wrote {record.addr:#x}..{end:#x}, which is "
                                f"in no device-writable buffer of an outstanding element")

    def check_buffer(self, q: int, seq: int, exp: _Expected) -> None:
        """The RTL backend's pattern must be in every writable buffer of a used element."""
        rtl_seq = seq % (2 * self.reorder_depth)
        offset = 0
        for addr, length in exp.writable:
            want = pattern_bytes(q, rtl_seq, exp.head, offset, length)
            got = self.mem.read(addr, length)
            if got != want:
                raise UsedRingViolation(f"queue {q} buffer {seq} (head {exp.head}): "
                                        f"{length} bytes at {addr:#x} do not hold the pattern")
            offset += length
            self.writable_ranges.pop((q, addr), None)

    # --- driving ------------------------------------------------------------------------
    def kick(self, q: int) -> None:
        self.doorbells.append(q)

    def check(self) -> None:
        if self.violation is not None:
            raise self.violation

    async def wait_for(self, condition, cycles: int, what: str) -> int:
        """Wait until ``condition()`` holds, at most ``cycles`` clocks; returns the clocks."""
        start = self.dma.cycle
        step = 16
        while not condition():
            self.check()
            if self.dma.cycle - start > cycles:
                raise AssertionError(f"timeout after {cycles} cycles waiting for {what} "
                                     f"({self.status()})")
            await ClockCycles(self.dut.clk, step)
        self.check()
        return self.dma.cycle - start

    def status(self) -> str:
        parts = []
        for d in self.queues:
            if d is not None:
                parts.append(f"q{d.index}: submitted {d.submitted} dispatched {d.dispatched} "
                             f"used {d.used}")
        parts.append(f"needs_reset={int(self.dut.needs_reset.value)}")
        return "; ".join(parts)

    async def run_traffic(self, *, timeout: int = 200_000) -> int:
        """Fill every queue and wait until every workload is used; returns the clocks."""
        for driver in self.queues:
            if driver is not None:
                driver.refill()
        cycles = await self.wait_for(
            lambda: all(d is None or d.finished for d in self.queues), timeout,
            "every request to be used")
        await self.settle()
        return cycles

    async def settle(self, cycles: int = 400) -> None:
        """Let trailing notifications and decision reads happen, then judge the end state."""
        await self.wait_for(lambda: all(
            d is None or not (d.pending_idx or d.deciding) for d in self.queues), 20_000,
            "every used->idx write to be decided")
        await ClockCycles(self.dut.clk, cycles)
        self.check()

    def finish(self, *, all_used: bool = True) -> dict:
        reports = {}
        for driver in self.queues:
            if driver is not None:
                reports[driver.index] = driver.checker.finish(all_used=all_used)
        return reports

    def error(self) -> dict:
        return unpack(VirtqError, int(self.dut.error.value))

    def stats(self) -> dict:
        return unpack(VirtqStats, int(self.dut.stats.value))

    def _dump_reset_state(self) -> None:
        """Log which block holds a reset up (internal signals, for diagnosis only)."""
        engine = self.dut.engine
        for path in ("fetcher.quiet", "walker.quiet", "dispatcher.quiet", "used_writer.quiet",
                     "notifier.quiet", "ring_arb.idle", "desc_arb.idle", "wr_arb.idle"):
            try:
                handle = engine
                for part in path.split("."):
                    handle = getattr(handle, part)
                self.dut._log.error("reset stuck: %s = %s", path, handle.value)
            except AttributeError:
                self.dut._log.error("reset stuck: %s not visible", path)
        self.dut._log.error("DMA busy: %s", {n: c.busy for n, c in self.dma.channels.items()})

    async def device_reset(self, *, timeout: int = 20_000) -> int:
        """Reset the device as a driver does (status 0, wait until it reads 0); returns the
        clocks it took. Checks that no DMA command is outstanding once ``idle`` is up."""
        dut = self.dut
        for driver in self.queues:
            if driver is not None:
                driver.stopped = True
        self.backend.active = False
        dut.reset.value = 1
        dut.be_reset.value = 1
        try:
            cycles = await self.wait_for(
                lambda: int(dut.idle.value) and int(dut.be_idle.value), timeout,
                "idle after reset")
        except AssertionError:
            self._dump_reset_state()
            raise
        if self.dma.busy():
            busy = [name for name, channel in self.dma.channels.items() if channel.busy]
            raise AssertionError(f"engine reports idle while DMA commands are outstanding "
                                 f"on {busy}")
        before = (len(self.dma.reads), len(self.dma.writes))
        await ClockCycles(dut.clk, 50)
        if (len(self.dma.reads), len(self.dma.writes)) != before or self.dma.busy():
            raise AssertionError("DMA activity while the engine is held in reset")
        if int(dut.needs_reset.value):
            raise AssertionError("needs_reset still set after a reset")
        dut.driver_ok.value = 0
        dut.reset.value = 0
        dut.be_reset.value = 0
        self.backend.reset()
        self.elem_beats.clear()
        self.writable_ranges.clear()
        self.doorbells.clear()
        self.queues = [None] * self.num_queues
        await ClockCycles(dut.clk, 2)
        return cycles
