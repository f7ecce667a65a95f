"""Random virtio-blk request mixes with every byte checked against a golden disk.

:class:`BlkWorkload` keeps a chosen number of requests in flight on a :class:`VirtioBlk`:
a weighted mix of IN, OUT, FLUSH and GET_ID, data sizes from a list, data split into a
random number of scattered buffers (within ``seg_max`` / ``size_max``), spread over the
queues, several requests per doorbell if asked. Requests in flight never overlap a write in
flight, so the expected disk contents are defined whatever order the device completes them
in. Every completion is checked: the status byte, the used length virtio-blk implies
(:mod:`sim.model.blk`), read data against :class:`GoldenDisk`, the GET_ID string.

:class:`GoldenDisk` is what the disk must hold. Sectors whose initial contents are not known
are not checked until written; a write aborted by a device reset may or may not have
happened, so its sectors accept either content until the next completed write.
"""
from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from cocotb.triggers import Event, First, Timer
from cocotb.utils import get_sim_time

from hdl.virtio.spec import (
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_SECTOR_BYTES, VirtioBlkStatus, VirtioBlkType,
)

from .blk import BlkRequest, VirtioBlk, percentile
from .virtqueue import VirtqueueStats

__all__ = ["Mix", "WorkloadConfig", "WorkloadResult", "GoldenDisk", "BlkWorkload",
           "run_requests", "wait_for"]

log = logging.getLogger(__name__)

SECTOR = VIRTIO_BLK_SECTOR_BYTES


@dataclass(frozen=True)
class Mix:
    """Relative weights of the request types."""
    read: float = 0.5
    write: float = 0.4
    flush: float = 0.05
    get_id: float = 0.05


@dataclass(frozen=True)
class WorkloadConfig:
    """One run.

    ``sizes`` are data lengths in bytes (multiples of 512); ``segment_granularity`` is the
    unit data is split at when scattered; ``max_segments`` caps buffers per request (the
    driver's limit applies anyway); ``queues`` lists the queues used (all by default);
    ``batch`` requests share one doorbell; ``sectors`` is the range used (whole disk by
    default); ``buffer_align`` is the alignment of data buffers (Linux's block layer asks
    for 512; 1 puts them at any byte).
    """
    requests: int
    queue_depth: int = 1
    mix: Mix = Mix()
    sizes: Sequence[int] = (512, 4096)
    scatter: bool = True
    max_segments: int = 8
    segment_granularity: int = 512
    queues: Sequence[int] | None = None
    batch: int = 1
    sectors: tuple[int, int] | None = None
    buffer_align: int = 512

    def __post_init__(self):
        if self.requests < 0 or self.queue_depth < 1 or self.batch < 1:
            raise ValueError("requests must be >= 0, queue_depth and batch >= 1")
        if not self.sizes or any(s <= 0 or s % SECTOR for s in self.sizes):
            raise ValueError(f"sizes {list(self.sizes)} must be positive multiples of {SECTOR}")
        if self.segment_granularity < 1 or SECTOR % self.segment_granularity:
            raise ValueError(f"segment_granularity {self.segment_granularity} must divide "
                             f"{SECTOR}")


@dataclass
class WorkloadResult:
    """What a run did and what went wrong (``failures`` empty means every check passed).
    Counters are for this run only; times are simulated."""
    requests: int = 0
    by_type: Counter = field(default_factory=Counter)
    aborted: int = 0
    failures: list[str] = field(default_factory=list)
    elapsed_ns: float = 0.0
    bytes_read: int = 0
    bytes_written: int = 0
    latencies_ns: list[float] = field(default_factory=list)
    used_entries: int = 0
    buffers: int = 0
    kicks: int = 0
    kicks_suppressed: int = 0
    interrupts: int = 0
    device_control_tlps: int = 0
    driver_mmio: int = 0

    @property
    def iops(self) -> float:
        return self.requests / (self.elapsed_ns * 1e-9) if self.elapsed_ns else 0.0

    @property
    def mb_per_s(self) -> float:
        return (self.bytes_read + self.bytes_written) / (self.elapsed_ns * 1e-3) \
            if self.elapsed_ns else 0.0

    @property
    def mean_run_length(self) -> float:
        return self.buffers / self.used_entries if self.used_entries else 0.0

    def latency(self, pct: float) -> float:
        return percentile(self.latencies_ns, pct)


class GoldenDisk:
    """The contents a disk of ``capacity`` sectors must have.

    Parameters
    ----------
    capacity : int
    image : bytes, optional
        The initial contents, if known; otherwise every sector is unknown until written.
    """

    def __init__(self, capacity: int, image: bytes | None = None):
        if image is not None and len(image) != capacity * SECTOR:
            raise ValueError(f"image of {len(image)} bytes for {capacity} sectors")
        self.capacity = capacity
        self._data = bytearray(image) if image is not None else bytearray(capacity * SECTOR)
        self._known = [image is not None] * capacity
        self._uncertain: dict[int, set[bytes]] = {}

    def _sector(self, s: int) -> bytes:
        return bytes(self._data[s * SECTOR:(s + 1) * SECTOR])

    def write_done(self, sector: int, data: bytes) -> None:
        self._data[sector * SECTOR:sector * SECTOR + len(data)] = data
        for s in range(sector, sector + len(data) // SECTOR):
            self._known[s] = True
            self._uncertain.pop(s, None)

    def write_aborted(self, sector: int, data: bytes) -> None:
        """A write that may or may not have reached the disk."""
        for i in range(len(data) // SECTOR):
            s = sector + i
            if not self._known[s]:
                continue
            alternatives = self._uncertain.setdefault(s, {self._sector(s)})
            alternatives.add(bytes(data[i * SECTOR:(i + 1) * SECTOR]))

    def certain_image(self) -> list[tuple[int, bytes]]:
        """``(sector, contents)`` of every sector whose contents are known for sure."""
        return [(s, self._sector(s)) for s in range(self.capacity)
                if self._known[s] and s not in self._uncertain]

    def mismatches(self, sector: int, data: bytes) -> list[int]:
        """Sectors of a read of ``data`` at ``sector`` that hold what they must not."""
        bad = []
        for i in range(len(data) // SECTOR):
            s = sector + i
            if not self._known[s]:
                continue
            got = bytes(data[i * SECTOR:(i + 1) * SECTOR])
            allowed = self._uncertain.get(s)
            if (got not in allowed) if allowed else (got != self._sector(s)):
                bad.append(s)
        return bad


def _vq_delta(after: VirtqueueStats, before: VirtqueueStats) -> VirtqueueStats:
    delta = VirtqueueStats()
    for f in fields(VirtqueueStats):
        if f.name != "run_lengths":
            setattr(delta, f.name, getattr(after, f.name) - getattr(before, f.name))
    return delta


class BlkWorkload:
    """Runs :class:`WorkloadConfig` mixes on ``blk`` and checks them against ``golden``.

    Parameters
    ----------
    blk : VirtioBlk
        Probed.
    golden : GoldenDisk
    serial : bytes, optional
        The expected GET_ID string (20 bytes, NUL-padded); unchecked if None.
    rng : random.Random, optional
    """

    def __init__(self, blk: VirtioBlk, golden: GoldenDisk, *, serial: bytes | None = None,
                 rng: random.Random | None = None):
        self.blk = blk
        self.golden = golden
        self.serial = serial
        self.rng = rng or random.Random(random.getrandbits(32))
        self._writes_in_flight: dict[int, tuple[int, int]] = {}
        self._in_flight: dict[int, tuple[int, int]] = {}

    async def run(self, cfg: WorkloadConfig) -> WorkloadResult:
        blk = self.blk
        result = WorkloadResult()
        vq_before = blk.vq_stats()
        irq_before = blk.irq_stats.total
        traffic_before = blk.traffic.snapshot()
        mmio_before = blk.mmio.mmio_reads + blk.mmio.mmio_writes
        start = get_sim_time("ns")
        queues = list(cfg.queues) if cfg.queues is not None else list(range(blk.num_queues))
        completed = Event()
        state = {"outstanding": 0, "issued": 0, "queue": 0}

        def on_done(req: BlkRequest) -> None:
            state["outstanding"] -= 1
            self._check(req, result)
            completed.set()

        while state["issued"] < cfg.requests or state["outstanding"]:
            batch = []
            while (state["issued"] + len(batch) < cfg.requests
                   and state["outstanding"] + len(batch) < cfg.queue_depth
                   and len(batch) < cfg.batch):
                req = self._make(cfg, on_done)
                if req is None:
                    break
                batch.append(req)
            if batch:
                queue = queues[state["queue"] % len(queues)]
                state["queue"] += 1
                state["issued"] += len(batch)
                state["outstanding"] += len(batch)
                await blk.submit_batch(batch, queue)
                continue
            completed.clear()
            await completed.wait()

        result.elapsed_ns = get_sim_time("ns") - start
        vq = _vq_delta(blk.vq_stats(), vq_before)
        result.used_entries = vq.used_entries
        result.buffers = vq.buffers
        result.kicks = vq.kicks
        result.kicks_suppressed = vq.kicks_suppressed
        result.interrupts = blk.irq_stats.total - irq_before
        result.device_control_tlps = (blk.traffic - traffic_before).control_tlps
        result.driver_mmio = blk.mmio.mmio_reads + blk.mmio.mmio_writes - mmio_before
        return result

    # --- making requests ---------------------------------------------------------------------
    def _make(self, cfg: WorkloadConfig, on_done) -> BlkRequest | None:
        mix = cfg.mix
        kind = self.rng.choices(
            (VirtioBlkType.IN, VirtioBlkType.OUT, VirtioBlkType.FLUSH, VirtioBlkType.GET_ID),
            (mix.read, mix.write, mix.flush, mix.get_id))[0]
        if kind in (VirtioBlkType.FLUSH, VirtioBlkType.GET_ID):
            segments = None
            if kind is VirtioBlkType.GET_ID and cfg.scatter and self.blk.max_data_segments > 1:
                cut = self.rng.randrange(1, VIRTIO_BLK_ID_BYTES)
                segments = [cut, VIRTIO_BLK_ID_BYTES - cut]
            return BlkRequest(kind, segments=segments, scatter=cfg.scatter,
                              align=cfg.buffer_align, callback=on_done)
        size = self.rng.choice(list(cfg.sizes))
        count = size // SECTOR
        lo, hi = cfg.sectors if cfg.sectors is not None else (0, self.blk.capacity)
        if hi - lo < count:
            raise ValueError(f"sector range {lo}..{hi} is too small for {size}-byte requests")
        for _ in range(8):
            sector = self.rng.randrange(lo, hi - count + 1)
            if not self._overlaps(sector, count, kind is VirtioBlkType.OUT):
                break
        else:
            return None
        segments = self._segments(cfg, size)
        if kind is VirtioBlkType.OUT:
            req = BlkRequest(kind, sector, data=self.rng.randbytes(size), segments=segments,
                             scatter=cfg.scatter, align=cfg.buffer_align, callback=on_done)
            self._writes_in_flight[id(req)] = (sector, count)
        else:
            req = BlkRequest(kind, sector, length=size, segments=segments,
                             scatter=cfg.scatter, align=cfg.buffer_align, callback=on_done)
        self._in_flight[id(req)] = (sector, count)
        return req

    def _overlaps(self, sector: int, count: int, is_write: bool) -> bool:
        ranges = self._in_flight if is_write else self._writes_in_flight
        return any(sector < s + n and s < sector + count for s, n in ranges.values())

    def _segments(self, cfg: WorkloadConfig, size: int) -> list[int] | None:
        """A random split of ``size`` into buffers of whole granules, each within
        ``size_max``, at most as many as ``seg_max`` and the configuration allow."""
        granule = cfg.segment_granularity
        units = size // granule
        max_units = units
        if self.blk.size_max:
            max_units = min(units, self.blk.size_max // granule)
        limit = min(units, self.blk.max_data_segments,
                    cfg.max_segments if cfg.scatter else 1)
        least = -(-units // max(1, max_units))
        if max_units < 1 or least > limit:
            raise ValueError(f"{size}-byte requests cannot be split into at most {limit} "
                             f"buffers of at most {self.blk.size_max} bytes")
        count = self.rng.randint(least, limit)
        if count == 1:
            return None
        parts = [1] * count
        for _ in range(units - count):
            while True:
                i = self.rng.randrange(count)
                if parts[i] < max_units:
                    parts[i] += 1
                    break
        return [p * granule for p in parts]

    # --- checking completions ----------------------------------------------------------------
    def _check(self, req: BlkRequest, result: WorkloadResult) -> None:
        key = id(req)
        self._in_flight.pop(key, None)
        self._writes_in_flight.pop(key, None)
        if req.aborted:
            result.aborted += 1
            if req.type is VirtioBlkType.OUT:
                self.golden.write_aborted(req.sector, req.data)
            return
        result.requests += 1
        result.by_type[req.type.name] += 1
        result.latencies_ns.append(req.latency_ns)
        what = f"{req.type.name} sector {req.sector} ({req.data_length} bytes, queue {req.queue})"
        if req.status is not VirtioBlkStatus.OK:
            result.failures.append(f"{what}: status {req.status!r}")
            return
        expected_len = {VirtioBlkType.IN: req.data_length + 1,
                        VirtioBlkType.GET_ID: VIRTIO_BLK_ID_BYTES + 1}.get(req.type, 1)
        if req.used_len != expected_len:
            result.failures.append(f"{what}: used length {req.used_len}, expected "
                                   f"{expected_len} (virtio 1.2 §2.7.8.2)")
        if req.type is VirtioBlkType.OUT:
            self.golden.write_done(req.sector, req.data)
            result.bytes_written += len(req.data)
        elif req.type is VirtioBlkType.IN:
            result.bytes_read += req.length
            bad = self.golden.mismatches(req.sector, req.result)
            if bad:
                result.failures.append(f"{what}: wrong data in sectors {bad[:8]}")
        elif req.type is VirtioBlkType.GET_ID and self.serial is not None:
            if req.result != self.serial:
                result.failures.append(f"{what}: GET_ID returned {req.result!r}, expected "
                                       f"{self.serial!r}")


async def run_requests(blk: VirtioBlk, reqs: Sequence[BlkRequest], depth: int,
                       queue: int | None = 0) -> None:
    """Submit ``reqs`` in order to ``queue`` (None: the driver picks, as for ``submit``), at
    most ``depth`` in flight; wait for all of them."""
    in_flight: list[BlkRequest] = []
    for req in reqs:
        while len(in_flight) >= depth:
            await First(*(r._done.wait() for r in in_flight))
            in_flight = [r for r in in_flight if not r.done]
        await blk.submit(req, queue)
        in_flight.append(req)
    for req in reqs:
        await req.wait()


async def wait_for(condition, *, timeout_ns: int = 2_000_000, step_ns: int = 500) -> None:
    """Let simulated time pass until ``condition()`` holds; fail after ``timeout_ns``."""
    waited = 0
    while not condition():
        assert waited < timeout_ns, "condition not reached in time"
        await Timer(step_ns, "ns")
        waited += step_ns
