"""A virtio-blk driver model on top of :class:`~sim.driver.device.VirtioPciDriver`.

:class:`VirtioBlk` imitates Linux's ``virtio_blk.c`` with blk-mq above it:

* ``virtblk_probe``: negotiate (the device-type features of :data:`BLK_DRIVER_FEATURES`),
  read ``seg_max`` (at least 1), ``num_queues`` with VIRTIO_BLK_F_MQ (``init_vq``; capped by
  the caller like Linux caps it by the CPU count), set the queues up, size the tag sets
  (``queue_depth`` = the ring size, halved without INDIRECT_DESC because a request then
  takes at least two descriptors), read ``size_max``, ``blk_size`` and ``capacity``, then
  DRIVER_OK. Device configuration reads use the ``config_generation`` loop (§2.5.1).
* ``virtio_queue_rq`` / ``virtblk_add_req``: a request is the 16-byte header
  (device-readable), the data buffers (device-readable for OUT, device-writable for IN and
  GET_ID) and the status byte (device-writable) (virtio 1.2 §5.2.6). When the ring has no
  room (``-ENOSPC``) the queue is kicked and the request waits for completions
  (``BLK_STS_DEV_RESOURCE``, the hardware queue stopped until a completion restarts it).
  The doorbell is rung through ``virtqueue_kick_prepare`` once per submission batch (blk-mq's
  ``bd->last``).
* ``virtblk_done``: per queue, ``disable_cb``; ``get_buf`` until empty; repeat while
  ``enable_cb`` says more arrived.
* ``virtblk_config_changed``: re-read the capacity.

A request's completion is an awaitable (:meth:`BlkRequest.wait`) plus an optional callback.
:class:`BlkStats` collects what a benchmark reports: requests and bytes, latencies in
simulated time, and, from the virtqueues, kicks, interrupts, used-ring entries reaped and
the average in-order run length.
"""
from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cocotb
from cocotb.triggers import Event, Timer
from cocotb.utils import get_sim_time

from hdl.virtio.spec import (
    BlkConfig, BlkFeature, Feature, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_REQ_HEADER_BYTES,
    VIRTIO_BLK_SECTOR_BYTES, VirtioBlkStatus, VirtioBlkType, feature_mask,
)
from sim.model.blk import encode_request_header

from .device import InterruptStats, VirtioPciDriver, VqSpec
from .memory import DmaKind, HostMemory
from .traffic import DeviceTraffic, TrafficMonitor
from .transport import MmioCounters
from .virtqueue import NoSpace, SplitVirtqueue, VirtqueueStats

__all__ = ["VirtioBlk", "BlkRequest", "BlkStats", "BlkSummary", "BLK_DRIVER_FEATURES",
           "percentile"]

log = logging.getLogger(__name__)

BLK_DRIVER_FEATURES = feature_mask(
    BlkFeature.SIZE_MAX, BlkFeature.SEG_MAX, BlkFeature.GEOMETRY, BlkFeature.RO,
    BlkFeature.BLK_SIZE, BlkFeature.FLUSH, BlkFeature.TOPOLOGY, BlkFeature.MQ)
"""The virtio-blk features this model handles (a subset of Linux's table: no CONFIG_WCE,
DISCARD, WRITE_ZEROES, SECURE_ERASE, zoned)."""

STATUS_POISON = 0xFF
"""Written into the status byte before a request is exposed, so a device that never writes
the status is seen."""

DATA_POISON = 0xA5
"""Fills device-writable data buffers before exposure, so data a device did not write is
seen."""


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (0 for an empty sequence)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * pct // 100)))
    return float(ordered[int(rank) - 1])


@dataclass(eq=False)
class BlkRequest:
    """One block request.

    ``type`` and ``sector`` as in the header; ``data`` the bytes of an OUT request;
    ``length`` the bytes an IN request reads (GET_ID always 20). ``segments`` splits the data
    into that many buffers of those lengths (default: one buffer); ``align`` is the data
    buffers' alignment (1 or 2: any byte / any even address) and ``scatter`` leaves random
    gaps between them.

    Filled in by the driver: ``queue``, ``status`` (None when aborted by a reset; an ``int``
    if the device wrote a value that is no :class:`VirtioBlkStatus`), ``result`` (data read:
    IN data or the GET_ID string), ``used_len``, ``t_submit`` / ``t_issue`` / ``t_complete``
    (simulated ns: handed to the driver, added to the ring, completed).
    """
    type: VirtioBlkType
    sector: int = 0
    data: bytes | None = None
    length: int = 0
    segments: Sequence[int] | None = None
    align: int = 64
    scatter: bool = False
    callback: Callable[[BlkRequest], None] | None = None
    queue: int | None = None
    status: VirtioBlkStatus | int | None = None
    result: bytes | None = None
    used_len: int | None = None
    aborted: bool = False
    t_submit: float = 0.0
    t_issue: float = 0.0
    t_complete: float = 0.0
    _done: Event = field(default_factory=Event, repr=False)
    _buffers: list[int] = field(default_factory=list, repr=False)
    _in_segments: list[tuple[int, int]] = field(default_factory=list, repr=False)
    _status_addr: int = field(default=0, repr=False)
    _sgs: tuple[list, list] = field(default_factory=lambda: ([], []), repr=False)

    @property
    def data_length(self) -> int:
        if self.type is VirtioBlkType.OUT:
            return len(self.data or b"")
        if self.type is VirtioBlkType.GET_ID:
            return VIRTIO_BLK_ID_BYTES
        if self.type is VirtioBlkType.IN:
            return self.length
        return 0

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def ok(self) -> bool:
        return self.status is VirtioBlkStatus.OK

    @property
    def latency_ns(self) -> float:
        return self.t_complete - self.t_submit

    async def wait(self) -> BlkRequest:
        await self._done.wait()
        return self


@dataclass(frozen=True)
class BlkSummary:
    """What a run did, for a report. Times are simulated; ``elapsed_ns`` is the window the
    rates refer to."""
    requests: int
    errors: int
    aborted: int
    bytes_read: int
    bytes_written: int
    elapsed_ns: float
    iops: float
    mb_per_s: float
    latency_mean_ns: float
    latency_p50_ns: float
    latency_p90_ns: float
    latency_p99_ns: float
    latency_max_ns: float
    used_entries: int
    buffers: int
    mean_run_length: float
    kicks: int
    kicks_suppressed: int
    interrupts: int
    device_control_tlps: int
    driver_mmio: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BlkStats:
    """Counters of the block layer. Queue and interrupt counters live in the driver; see
    :meth:`VirtioBlk.summary` for everything together."""
    submitted: Counter = field(default_factory=Counter)
    completed: Counter = field(default_factory=Counter)
    errors: int = 0
    aborted: int = 0
    requeues: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    latencies_ns: list[float] = field(default_factory=list)


class _Tags:
    """blk-mq's tag set for one hardware queue: at most ``depth`` requests in flight."""

    def __init__(self, depth: int):
        self.depth = depth
        self.free = depth
        self.changed = Event()

    async def acquire(self) -> None:
        while self.free == 0:
            self.changed.clear()
            await self.changed.wait()
        self.free -= 1

    def release(self) -> None:
        self.free += 1
        self.changed.set()


class _HwQueue:
    """One hardware queue: the virtqueue, its tags, the requests in flight, and the event
    that restarts a queue stopped on ``-ENOSPC``."""

    def __init__(self, vq: SplitVirtqueue, depth: int, generation: int):
        self.vq = vq
        self.tags = _Tags(depth)
        self.generation = generation
        self.space = Event()
        self.poller = None


class VirtioBlk:
    """virtio-blk over virtio-pci, driven like Linux's virtio_blk.

    Parameters
    ----------
    rc : cocotbext.pcie.core.RootComplex
        Already enumerated.
    dev : PciDevice, optional
        The function; the first virtio function on the bus by default.
    memory : HostMemory, optional
    monitor : TrafficMonitor, optional
        See :class:`~sim.driver.device.VirtioPciDriver`.
    intx_source : object, optional
        For INTx (see :class:`~sim.driver.device.VirtioPciDriver`).
    features_mask : int
        ANDed with the features the driver would accept: clear a bit to turn that feature
        off. All the driver knows by default.
    max_queues : int or None
        Upper bound on request queues (Linux: the CPU count); all the device offers by
        default.
    queue_size : int or None
        Ring size limit; the device's maximum by default.
    queue_depth : int or None
        Tags per queue (``virtblk_queue_depth``); by default as Linux sizes it.
    use_msix : bool
        Try MSI-X first; False goes straight to INTx.
    rng : random.Random, optional
        For scattered buffer placement.
    """

    def __init__(self, rc, dev=None, *, memory: HostMemory | None = None,
                 monitor: TrafficMonitor | None = None, intx_source=None,
                 features_mask: int = ~0, max_queues: int | None = None,
                 queue_size: int | None = None, queue_depth: int | None = None,
                 use_msix: bool = True, rng: random.Random | None = None,
                 status_poll_ns: int = 200):
        self.driver = VirtioPciDriver(rc, dev, memory=memory, monitor=monitor,
                                      intx_source=intx_source, status_poll_ns=status_poll_ns)
        self.driver.config_changed = self._config_changed
        self.memory = self.driver.memory
        self.features_mask = features_mask
        self.max_queues = max_queues
        self.queue_size = queue_size
        self.queue_depth_param = queue_depth
        self.use_msix = use_msix
        self.rng = rng or random.Random(random.getrandbits(32))
        self.stats = BlkStats()
        self.queues: list[_HwQueue] = []
        self.capacity = 0
        self.seg_max = 1
        self.size_max: int | None = None
        self.blk_size = VIRTIO_BLK_SECTOR_BYTES
        self.read_only = False
        self.num_device_queues = 1
        self.generation = 0
        self.config_updates = 0
        self._retired_vq_stats = VirtqueueStats()
        self._running = Event()
        self._next_queue = 0

    # --- properties ---------------------------------------------------------------------------
    @property
    def features(self) -> int:
        return self.driver.features

    @property
    def num_queues(self) -> int:
        return len(self.queues)

    @property
    def queue_depth(self) -> int:
        return self.queues[0].tags.depth if self.queues else 0

    def has(self, bit: int) -> bool:
        return self.driver.has(bit)

    @property
    def max_data_segments(self) -> int:
        """Data buffers one request may have: ``seg_max``, and without indirect descriptors
        no more than fit the ring beside the header and status."""
        limit = self.seg_max
        if not self.has(Feature.INDIRECT_DESC) and self.queues:
            limit = min(limit, self.queues[0].vq.size - 2)
        return max(1, limit)

    # --- probe (virtblk_probe) -----------------------------------------------------------------
    async def probe(self) -> None:
        """Initialise the device and the queues (§3.1.1, §5.2.5)."""
        await self.driver.probe(BLK_DRIVER_FEATURES, self.features_mask)
        await self._init_queues()

    async def _init_queues(self) -> None:
        t = self.driver.transport
        if self.has(BlkFeature.SEG_MAX):
            (seg_max,) = await t.read_config([(BlkConfig.SEG_MAX, 4)])
            self.seg_max = max(1, min(seg_max, 32767))
        if self.has(BlkFeature.MQ):
            (num,) = await t.read_config([(BlkConfig.NUM_QUEUES, 2)])
            if num == 0:
                await self.driver.fail()
                raise ValueError("MQ advertised but zero queues reported")
            self.num_device_queues = num
        else:
            self.num_device_queues = 1
        nqueues = self.num_device_queues if self.max_queues is None \
            else min(self.num_device_queues, self.max_queues)
        vqs = await self.driver.find_vqs(
            [VqSpec(self._vq_done, self.queue_size) for _ in range(nqueues)],
            use_msix=self.use_msix)
        self.generation += 1
        depth = self.queue_depth_param
        if depth is None:
            depth = vqs[0].num_free
            if not self.has(Feature.INDIRECT_DESC):
                depth //= 2
        depth = max(1, depth)
        self.queues = [_HwQueue(vq, depth, self.generation) for vq in vqs]
        self.size_max = None
        if self.has(BlkFeature.SIZE_MAX):
            (self.size_max,) = await t.read_config([(BlkConfig.SIZE_MAX, 4)])
        self.blk_size = VIRTIO_BLK_SECTOR_BYTES
        if self.has(BlkFeature.BLK_SIZE):
            (self.blk_size,) = await t.read_config([(BlkConfig.BLK_SIZE, 4)])
        self.read_only = self.has(BlkFeature.RO)
        await self._update_capacity()
        await self.driver.ready()
        self._running.set()
        log.info("virtio-blk: %d sectors, %d queue(s) of %d, depth %d, seg_max %d, "
                 "interrupts %s", self.capacity, len(vqs), vqs[0].size, depth, self.seg_max,
                 self.driver.irq_mode)

    async def _update_capacity(self) -> None:
        (self.capacity,) = await self.driver.transport.read_config([(BlkConfig.CAPACITY, 8)])

    def _config_changed(self) -> None:
        async def work():
            await self._update_capacity()
            self.config_updates += 1
        cocotb.start_soon(work())

    # --- submission (virtio_queue_rq) ----------------------------------------------------------
    def _pick_queue(self, queue: int | None) -> int:
        if queue is None:
            queue = self._next_queue
            self._next_queue = (self._next_queue + 1) % len(self.queues)
        if not 0 <= queue < len(self.queues):
            raise ValueError(f"queue {queue} does not exist ({len(self.queues)} queues)")
        return queue

    async def submit(self, req: BlkRequest, queue: int | None = None, *,
                     kick: bool = True) -> BlkRequest:
        """Hand ``req`` to the device; returns once it is in the ring (not completed)."""
        await self.submit_batch([req], queue, kick=kick)
        return req

    async def submit_batch(self, reqs: Sequence[BlkRequest], queue: int | None = None, *,
                           kick: bool = True) -> None:
        """Add several requests to one queue and ring the doorbell once at the end (one
        ``kick_prepare`` for the batch, like blk-mq's ``bd->last``)."""
        if not self.queues:
            raise RuntimeError("probe() first")
        now = get_sim_time("ns")
        for req in reqs:
            self._check(req)
            req.t_submit = now
            self.stats.submitted[req.type.name] += 1
            self._build(req)
        index = self._pick_queue(queue)
        pending = list(reqs)
        hwq = None
        while pending:
            await self._wait_running()
            hwq = self.queues[index]
            await hwq.tags.acquire()
            if hwq.generation != self.generation:
                continue            # reset while waiting: go again on the new queue
            req = pending[0]
            try:
                hwq.vq.add(*req._sgs, req)
            except NoSpace:
                hwq.tags.release()
                self.stats.requeues += 1
                hwq.space.clear()
                await hwq.vq.kick()
                await hwq.space.wait()
                continue
            req.queue = index
            req.t_issue = get_sim_time("ns")
            pending.pop(0)
        # A reset may have come while the last request went in; the new queue is empty.
        if kick and hwq is not None and hwq.generation == self.generation:
            if hwq.vq.kick_prepare():
                await hwq.vq.notify()

    async def kick(self, queue: int) -> bool:
        """``virtqueue_kick`` on a queue (after :meth:`submit` with ``kick=False``)."""
        return await self.queues[queue].vq.kick()

    async def execute(self, req: BlkRequest, queue: int | None = None) -> BlkRequest:
        """Submit and wait for completion."""
        await self.submit(req, queue)
        return await req.wait()

    async def read(self, sector: int, length: int, **kwargs) -> BlkRequest:
        return await self.execute(BlkRequest(VirtioBlkType.IN, sector, length=length, **kwargs))

    async def write(self, sector: int, data: bytes, **kwargs) -> BlkRequest:
        return await self.execute(BlkRequest(VirtioBlkType.OUT, sector, data=data, **kwargs))

    async def flush(self, **kwargs) -> BlkRequest:
        return await self.execute(BlkRequest(VirtioBlkType.FLUSH, **kwargs))

    async def get_id(self, **kwargs) -> BlkRequest:
        return await self.execute(BlkRequest(VirtioBlkType.GET_ID, **kwargs))

    async def _wait_running(self) -> None:
        while not self._running.is_set():
            await self._running.wait()

    def _check(self, req: BlkRequest) -> None:
        if req.type is VirtioBlkType.OUT and not req.data:
            raise ValueError("an OUT request needs data")
        if req.type is VirtioBlkType.IN and req.length <= 0:
            raise ValueError("an IN request needs a positive length")
        if req.segments is not None:
            if sum(req.segments) != req.data_length or any(s <= 0 for s in req.segments):
                raise ValueError(f"segments {list(req.segments)} do not split "
                                 f"{req.data_length} data bytes")
            if len(req.segments) > self.max_data_segments:
                raise ValueError(f"{len(req.segments)} data segments, the device takes "
                                 f"{self.max_data_segments} (seg_max)")
            if self.size_max and max(req.segments) > self.size_max:
                raise ValueError(f"a segment of {max(req.segments)} bytes exceeds size_max "
                                 f"{self.size_max}")

    def _alloc(self, req: BlkRequest, size: int, align: int) -> int:
        """A buffer aligned to ``align``; below 4, at a random byte offset within a DW.
        Scattered requests leave a random gap behind each buffer."""
        slack = self.rng.randrange(0, 4) * 64 if req.scatter else 0
        shift = self.rng.randrange(0, 4, align) if align < 4 else 0
        base = self.memory.alloc(size + shift, align=max(align, 4), kind=DmaKind.BUFFER,
                                 slack=slack)
        req._buffers.append(base)
        return base + shift

    def _build(self, req: BlkRequest) -> None:
        """``virtblk_setup_cmd`` and the scatterlist of ``virtblk_add_req``."""
        mem = self.memory
        req._buffers.clear()
        req._in_segments.clear()
        header = self._alloc(req, VIRTIO_BLK_REQ_HEADER_BYTES, 8)
        mem.write(header, encode_request_header(req.type, req.sector))
        out_sgs = [(header, VIRTIO_BLK_REQ_HEADER_BYTES)]
        in_sgs = []
        length = req.data_length
        if length:
            segments = list(req.segments) if req.segments is not None else [length]
            position = 0
            for seg in segments:
                addr = self._alloc(req, seg, req.align)
                if req.type is VirtioBlkType.OUT:
                    mem.write(addr, req.data[position:position + seg])
                    out_sgs.append((addr, seg))
                else:
                    mem.write(addr, bytes([DATA_POISON]) * seg)
                    in_sgs.append((addr, seg))
                position += seg
        req._in_segments = list(in_sgs)
        status = self._alloc(req, 1, 1)
        mem.write(status, bytes([STATUS_POISON]))
        req._status_addr = status
        in_sgs.append((status, 1))
        req._sgs = (out_sgs, in_sgs)

    # --- completion (virtblk_done) ------------------------------------------------------------
    def _vq_done(self, vq: SplitVirtqueue) -> None:
        hwq = self._queue_of(vq)
        if hwq is None:
            return              # an interrupt that raced with a reset: the queue is gone
        if hwq.poller is not None:
            # A polled queue keeps its interrupts off; one that slips through (EVENT_IDX
            # can only move used_event out of the way) just reaps.
            self._reap(vq)
            return
        while True:
            vq.disable_cb()
            self._reap(vq)
            if vq.enable_cb():
                break

    def _reap(self, vq: SplitVirtqueue) -> int:
        hwq = self._queue_of(vq)
        if hwq is None:
            return 0
        count = 0
        while (got := vq.get_buf()) is not None:
            req, used_len = got
            self._complete(hwq, req, used_len)
            count += 1
        return count

    def _queue_of(self, vq: SplitVirtqueue) -> _HwQueue | None:
        for hwq in self.queues:
            if hwq.vq is vq:
                return hwq
        return None

    def _complete(self, hwq: _HwQueue | None, req: BlkRequest, used_len: int | None) -> None:
        mem = self.memory
        if used_len is None:
            req.aborted = True
            req.status = None
            self.stats.aborted += 1
        else:
            raw = mem.read(req._status_addr, 1)[0]
            try:
                req.status = VirtioBlkStatus(raw)
            except ValueError:
                req.status = raw
            req.used_len = used_len
            if req._in_segments:
                req.result = b"".join(mem.read(a, n) for a, n in req._in_segments)
            self.stats.completed[req.type.name] += 1
            if req.status is VirtioBlkStatus.OK:
                if req.type is VirtioBlkType.IN:
                    self.stats.bytes_read += req.length
                elif req.type is VirtioBlkType.OUT:
                    self.stats.bytes_written += len(req.data)
            else:
                self.stats.errors += 1
        for addr in req._buffers:
            mem.free(addr)
        req._buffers.clear()
        req.t_complete = get_sim_time("ns")
        if not req.aborted:
            self.stats.latencies_ns.append(req.t_complete - req.t_submit)
        if hwq is not None:
            hwq.tags.release()
            hwq.space.set()
        req._done.set()
        if req.callback is not None:
            req.callback(req)

    # --- polling instead of interrupts -----------------------------------------------------------
    def start_polling(self, queue: int, interval_ns: int) -> None:
        """Suppress the queue's interrupts and reap it every ``interval_ns`` instead."""
        hwq = self.queues[queue]
        if hwq.poller is not None:
            return
        hwq.vq.disable_cb()

        async def poll():
            while True:
                await Timer(interval_ns, "ns")
                self._reap(hwq.vq)
        hwq.poller = cocotb.start_soon(poll())

    def stop_polling(self, queue: int) -> None:
        """Back to interrupts (and reap what is waiting)."""
        hwq = self.queues[queue]
        if hwq.poller is None:
            return
        hwq.poller.cancel()
        hwq.poller = None
        self._vq_done(hwq.vq)

    # --- reset, re-initialisation, removal -----------------------------------------------------
    async def reset_device(self, *, reinit: bool = True) -> int:
        """Reset the device with requests in flight. Requests the device had returned are
        completed normally; the others are aborted (``status`` None). With ``reinit`` the
        device is initialised again (features, queues, DRIVER_OK), as after a resume.
        Returns the number of aborted requests."""
        self._running.clear()
        await self.driver.reset()
        aborted = 0
        for hwq in self.queues:
            if hwq.poller is not None:
                hwq.poller.cancel()
                hwq.poller = None
            self._reap(hwq.vq)
            for req in hwq.vq.detach_unused_buf():
                self._complete(hwq, req, None)
                aborted += 1
            self._retired_vq_stats.merge(hwq.vq.stats)
        await self.driver.del_vqs()
        old = self.queues
        self.queues = []
        for hwq in old:
            hwq.generation = -1
            hwq.tags.changed.set()
            hwq.space.set()
        if reinit:
            await self.driver.probe(BLK_DRIVER_FEATURES, self.features_mask)
            await self._init_queues()
        return aborted

    async def remove(self) -> None:
        """``virtblk_remove``: reset, then release queues and interrupts."""
        await self.reset_device(reinit=False)

    # --- statistics -----------------------------------------------------------------------------
    def vq_stats(self) -> VirtqueueStats:
        """The virtqueue counters summed over all queues, past ones included."""
        total = VirtqueueStats()
        total.merge(self._retired_vq_stats)
        for hwq in self.queues:
            total.merge(hwq.vq.stats)
        return total

    @property
    def irq_stats(self) -> InterruptStats:
        return self.driver.irq_stats

    @property
    def traffic(self) -> DeviceTraffic:
        return self.driver.monitor.traffic

    @property
    def mmio(self) -> MmioCounters:
        return self.driver.transport.counters

    def summary(self, elapsed_ns: float) -> BlkSummary:
        """Everything a report needs over a window of ``elapsed_ns`` simulated ns."""
        s = self.stats
        vq = self.vq_stats()
        done = sum(s.completed.values())
        latencies = s.latencies_ns
        elapsed_s = elapsed_ns * 1e-9 if elapsed_ns else float("inf")
        mmio = self.mmio
        return BlkSummary(
            requests=done, errors=s.errors, aborted=s.aborted, bytes_read=s.bytes_read,
            bytes_written=s.bytes_written, elapsed_ns=elapsed_ns, iops=done / elapsed_s,
            mb_per_s=(s.bytes_read + s.bytes_written) / elapsed_s / 1e6,
            latency_mean_ns=sum(latencies) / len(latencies) if latencies else 0.0,
            latency_p50_ns=percentile(latencies, 50), latency_p90_ns=percentile(latencies, 90),
            latency_p99_ns=percentile(latencies, 99),
            latency_max_ns=max(latencies) if latencies else 0.0,
            used_entries=vq.used_entries, buffers=vq.buffers,
            mean_run_length=vq.mean_run_length, kicks=vq.kicks,
            kicks_suppressed=vq.kicks_suppressed, interrupts=self.irq_stats.total,
            device_control_tlps=self.traffic.control_tlps,
            driver_mmio=mmio.mmio_reads + mmio.mmio_writes)
