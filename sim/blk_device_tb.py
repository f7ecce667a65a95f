"""cocotb side of the whole-device simulations: the RTL virtio-blk device
(:class:`sim.blk_device.BlkDeviceHarness`) behind :class:`sim.pcie_bridge.PcieBridge`, a
cocotbext-pcie root complex, and the Linux-like driver of :mod:`sim.driver`.

:class:`BlkDeviceTB` is the shared set-up (clock, reset, enumeration, host memory, a
driver); the cocotb tests here are the jobs of ``python -m sim.demo`` (``demo``) and
``python -m sim.bench.blk`` (``bench``). Each reads its job as JSON from ``BLK_JOB`` and
writes its results as JSON to the file named by ``BLK_RESULT``. The end-to-end tests in
``tests/cocotb/blk_device_e2e_tb.py`` use the same set-up.

The RTL's disk keeps its contents across the tests of one simulator run (a reset does not
clear memory), so the golden disk does too: :func:`golden_disk` is per process.
"""
from __future__ import annotations

import json
import logging
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotb.utils import get_sim_time
from cocotbext.pcie.core import RootComplex

from hdl.virtio.spec import Feature, VirtioBlkType, feature_mask, feature_names
from sim.blk_device import CLOCK_NS
from sim.driver import (
    BlkRequest, BlkWorkload, GoldenDisk, HostMemory, Mix, TrafficMonitor, VirtioBlk,
    WorkloadConfig, find_virtio_functions, run_requests,
)
from sim.model.pcie_link import LINKS, payload_limit
from sim.pcie_bridge import PcieBridge

__all__ = ["BlkDeviceTB", "golden_disk", "pattern", "IN_ORDER_MASK"]

SECTOR = 512
IN_ORDER_MASK = feature_mask(Feature.IN_ORDER)
_LINK_NAMES = {(1, 1): "gen1x1", (2, 1): "gen2x1", (2, 4): "gen2x4"}

_golden: GoldenDisk | None = None


def golden_disk(capacity: int) -> GoldenDisk:
    """The golden disk of this simulator run: the RTL's disk starts as zeros."""
    global _golden
    if _golden is None:
        _golden = GoldenDisk(capacity, bytes(capacity * SECTOR))
    return _golden


def pattern(sector: int, count: int, salt: int = 0) -> bytes:
    """A recognisable pattern for ``count`` sectors from ``sector``: every 8-byte word holds
    its sector, its offset and ``salt``, so a misplaced sector is named by its contents."""
    out = bytearray()
    for s in range(sector, sector + count):
        for off in range(0, SECTOR, 8):
            out += ((salt << 48) | (s << 16) | off).to_bytes(8, "little")
    return bytes(out)


class BlkDeviceTB:
    """Clock, reset, root complex and bridge around the device; drivers on demand.

    ``endpoint``: a cocotbext-pcie ``Device`` to put on the root port instead of a
    :class:`~sim.pcie_bridge.PcieBridge` to the RTL's raw TLP streams (for example the
    7-series block model, ``sim.pcie7x_model``); it then drives the RTL itself and the
    drivers have no INTx source. ``DUT_PARAMS`` must hold ``width``, ``link_speed``,
    ``link_width``, ``capacity``, ``serial``, ``reorder_depth`` and ``msix_vectors``.
    ``clock_ns``: the device's clock period.
    """

    def __init__(self, dut, *, rx_idle: float = 0.0, tx_backpressure: float = 0.0,
                 endpoint=None, clock_ns: float = CLOCK_NS):
        self.dut = dut
        self.clock_ns = clock_ns
        self.params = json.loads(os.environ["DUT_PARAMS"])
        self.log = logging.getLogger("cocotb.blk_device_tb")
        for name in ("cocotb.pcie", "sim.driver", "cocotb.pcie_bridge"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # Enumeration probes every device number; the misses are expected, not warnings.
        logging.getLogger("cocotb.pcie.RootComplex").setLevel(logging.ERROR)
        self.rng = random.Random(random.getrandbits(32))    # cocotb seeds random from SEED
        p = self.params
        Clock(dut.clk, clock_ns, unit="ns").start()
        self.rc = RootComplex()
        self.rc.max_payload_size = 1            # 256 bytes: what the device supports
        if endpoint is None:
            self.bridge = endpoint = PcieBridge(
                dut, dut.clk, width=p["width"], link_speed=p["link_speed"],
                link_width=p["link_width"], rx_idle=rx_idle, tx_backpressure=tx_backpressure,
                rng=self.rng)
        else:
            self.bridge = None
        self.rc.make_port().connect(endpoint)
        self.link_name = _LINK_NAMES.get((p["link_speed"], p["link_width"]),
                                         f"gen{p['link_speed']}x{p['link_width']}")
        self.capacity = p["capacity"]
        self.golden = golden_disk(self.capacity)
        self.serial = p["serial"].encode().ljust(20, b"\0")
        self.dev = None
        self.memory = None
        self.monitor = None

    async def start(self) -> None:
        """Reset the RTL, enumerate, take host memory for the driver."""
        self.dut.rst.value = 1
        if hasattr(self.dut, "function_reset"):     # not on a 7-series block's user side
            self.dut.function_reset.value = 0
        await ClockCycles(self.dut.clk, 10)
        self.dut.rst.value = 0
        # The reorder buffers clear their memories after reset; give them the time.
        await ClockCycles(self.dut.clk, self.params["reorder_depth"] + 100)
        await self.rc.enumerate()
        functions = find_virtio_functions(self.rc)
        assert len(functions) == 1, f"expected one virtio function, found {len(functions)}"
        self.dev = functions[0]
        self.memory = HostMemory.from_root_complex(self.rc, 16 << 20)
        self.monitor = TrafficMonitor(self.rc, self.memory)

    def driver(self, *, in_order: bool = True, features_mask: int = ~0, **kwargs) -> VirtioBlk:
        """A new driver (not yet probed); ``in_order`` False masks VIRTIO_F_IN_ORDER off."""
        if not in_order:
            features_mask &= ~IN_ORDER_MASK
        return VirtioBlk(self.rc, self.dev, memory=self.memory, monitor=self.monitor,
                         intx_source=self.bridge, features_mask=features_mask,
                         rng=random.Random(self.rng.getrandbits(32)), **kwargs)

    def workload(self, blk: VirtioBlk) -> BlkWorkload:
        return BlkWorkload(blk, self.golden, serial=self.serial,
                           rng=random.Random(self.rng.getrandbits(32)))

    def device_info(self) -> dict:
        dev = self.dev
        return {
            "bdf": str(dev.pcie_id), "vendor_id": dev.vendor_id, "device_id": dev.device_id,
            "class_code": dev.class_code, "revision_id": dev.revision_id,
            "subsystem_id": dev.subsystem_id, "bar0": dev.bar_addr[0],
            "bar0_size": dev.bar_size[0], "msix": self.params["msix_vectors"],
            "link": self.link_name,
        }

    async def fill(self, blk: VirtioBlk, *, chunk_sectors: int = 8, depth: int = 8,
                   salt: int = 1) -> dict:
        """Write :func:`pattern` over the whole disk, ``depth`` requests in flight, and
        update the golden disk as each completes."""
        start = get_sim_time("ns")
        reqs = []
        for sector in range(0, self.capacity, chunk_sectors):
            count = min(chunk_sectors, self.capacity - sector)
            reqs.append(BlkRequest(VirtioBlkType.OUT, sector,
                                   data=pattern(sector, count, salt)))
        await run_requests(blk, reqs, depth, queue=None)
        failures = [f"fill write at sector {r.sector}: status {r.status}" for r in reqs
                    if not r.ok]
        for r in reqs:
            if r.ok:
                self.golden.write_done(r.sector, r.data)
        return {"requests": len(reqs), "elapsed_ns": get_sim_time("ns") - start,
                "failures": failures}

    async def verify_disk(self, blk: VirtioBlk, *, chunk_sectors: int = 8,
                          depth: int = 8) -> list[str]:
        """Read the whole disk back; every known sector must hold the golden contents."""
        reqs = [BlkRequest(VirtioBlkType.IN, s, length=min(chunk_sectors, self.capacity - s)
                           * SECTOR) for s in range(0, self.capacity, chunk_sectors)]
        await run_requests(blk, reqs, depth, queue=None)
        failures = []
        for r in reqs:
            if not r.ok:
                failures.append(f"read-back at sector {r.sector}: status {r.status}")
                continue
            bad = self.golden.mismatches(r.sector, r.result)
            if bad:
                failures.append(f"read-back: sectors {bad[:8]} differ from the golden disk")
        return failures

    def link_efficiency(self, bytes_per_ns: float, size: int) -> float:
        """A payload rate as a fraction of the link's payload limit for ``size``-byte
        transfers at Max_Payload_Size 256 (``sim.model.pcie_link``)."""
        link = LINKS[self.link_name]
        limit = payload_limit(link, 1e9 / self.clock_ns, size, 256)     # bytes per clock
        return bytes_per_ns * self.clock_ns / limit


def _summary(result) -> dict:
    return {
        "requests": result.requests,
        "by_type": {str(getattr(k, "name", k)): v for k, v in result.by_type.items()},
        "failures": result.failures[:20],
        "failure_count": len(result.failures),
        "elapsed_ns": result.elapsed_ns,
        "iops": result.iops,
        "mb_per_s": result.mb_per_s,
        "bytes_read": result.bytes_read,
        "bytes_written": result.bytes_written,
        "mean_run_length": result.mean_run_length,
        "used_entries": result.used_entries,
        "buffers": result.buffers,
        "interrupts": result.interrupts,
        "kicks": result.kicks,
        "control_tlps": result.device_control_tlps,
        "latency_ns": {str(p): result.latency(p) if result.latencies_ns else 0.0
                       for p in (50, 90, 99, 100)},
    }


def _job() -> dict:
    return json.loads(os.environ.get("BLK_JOB", "{}"))


def _write_result(result: dict) -> None:
    path = os.environ.get("BLK_RESULT")
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)


@cocotb.test()
async def demo(dut):
    """The demo: enumerate, probe like Linux, fill the disk with a pattern, random mixes at
    several queue depths with every read checked, the whole disk read back."""
    job = _job()
    tb = BlkDeviceTB(dut)
    out = {"ok": False, "phases": []}
    try:
        await tb.start()
        out["device"] = tb.device_info()
        blk = tb.driver(in_order=job.get("in_order", True))
        await blk.probe()
        out["driver"] = {
            "features": blk.features, "feature_names": feature_names(blk.features),
            "capacity": blk.capacity, "queues": blk.num_queues,
            "queue_depth": blk.queue_depth, "seg_max": blk.seg_max,
            "irq": str(blk.driver.irq_mode),
        }
        fill = await tb.fill(blk)
        out["fill"] = fill
        failures = list(fill["failures"])
        mix = Mix(**job.get("mix", {}))
        for qd in job.get("queue_depths", [1, 8, 32]):
            result = await tb.workload(blk).run(WorkloadConfig(
                requests=job.get("requests", 200), queue_depth=qd, mix=mix))
            phase = _summary(result)
            phase["queue_depth"] = qd
            out["phases"].append(phase)
            failures += result.failures
            tb.log.info("QD %d: %d requests, %.0f IOPS, run length %.2f, %d failures", qd,
                        result.requests, result.iops, result.mean_run_length,
                        len(result.failures))
        failures += await tb.verify_disk(blk)
        await blk.remove()
        out["status"] = int(dut.device_status.value)
        out["failures"] = failures[:50]
        out["failure_count"] = len(failures)
        out["ok"] = not failures
        out["sim_time_ns"] = get_sim_time("ns")
    finally:
        _write_result(out)
    assert out["ok"], f"{out['failure_count']} checks failed, first: {out['failures'][:5]}"


@cocotb.test()
async def bench(dut):
    """The benchmark: for each (op, qd, in_order) in the job, 4 KiB random reads or writes
    (one buffer each, no scatter, no indirect needed) on queue 0; rates over the whole run,
    at least 4 x ``qd`` requests."""
    job = _job()
    tb = BlkDeviceTB(dut, clock_ns=job.get("clock_ns", CLOCK_NS))
    await tb.start()
    size = job.get("size", 4096)
    out = []
    try:
        for in_order in job.get("in_order", [True, False]):
            blk = tb.driver(in_order=in_order)
            await blk.probe()
            assert bool(blk.has(Feature.IN_ORDER)) == in_order
            for op in job.get("ops", ["read", "write"]):
                mix = Mix(read=1.0, write=0.0, flush=0.0, get_id=0.0) if op == "read" \
                    else Mix(read=0.0, write=1.0, flush=0.0, get_id=0.0)
                for qd in job.get("queue_depths", [1, 4, 16, 32, 64]):
                    workload = tb.workload(blk)
                    # Enough requests that filling and draining the queue (one request's
                    # latency each) are a small part of the run.
                    requests = max(job.get("requests", 200), 4 * qd)
                    cfg = WorkloadConfig(requests=requests, queue_depth=qd, mix=mix,
                                         sizes=(size,), scatter=False, queues=[0])
                    result = await workload.run(cfg)
                    # Whole run, first submission to last completion. A window inside the run
                    # would be biased: with IN_ORDER, completions are reported in batches,
                    # long after their data crossed the link.
                    rate = (result.bytes_read + result.bytes_written) / result.elapsed_ns
                    row = {
                        "op": op, "qd": qd, "link": tb.link_name, "in_order": in_order,
                        "clock_mhz": 1e3 / tb.clock_ns,
                        "link_efficiency": tb.link_efficiency(rate, size),
                        "iops": rate * 1e9 / size,
                        "control_tlps_per_request": result.device_control_tlps
                        / max(result.requests, 1),
                        "requests": result.requests,
                        "mb_per_s": result.mb_per_s,
                        "mean_run_length": result.mean_run_length,
                        "interrupts_per_request": result.interrupts / max(result.requests, 1),
                        "latency_p50_ns": result.latency(50),
                        "latency_p99_ns": result.latency(99),
                        "failures": len(result.failures),
                    }
                    assert not result.failures, result.failures[:5]
                    out.append(row)
                    tb.log.info("%s", row)
            await blk.remove()
    finally:
        _write_result({"rows": out})
