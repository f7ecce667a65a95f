"""Simulation builds of the whole virtio-blk device (:mod:`hdl.top`) for cocotb.

:class:`BlkDeviceHarness` is :class:`~hdl.top.VirtioBlkDevice` with its DMA credit limits
tied to "infinite" (the bridge's link model enforces the root port's credits on ``tx``);
every other port is the device's. :func:`device_params` turns a flat, JSON-able dict of knobs
(what ``sim.runner.run`` keys its build cache on and hands the testbench as
``DUT_PARAMS``) into :class:`~hdl.top.VirtioBlkDeviceParams`. :data:`PRESETS` are the builds
the demo, the tests and the benchmark use.
"""
from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

from amaranth.hdl import Module
from amaranth.lib import wiring

from hdl.pcie.dma.layouts import UNLIMITED_CREDITS
from hdl.pcie.params import LinkParams
from hdl.top import VirtioBlkDevice, VirtioBlkDeviceParams
from hdl.virtio.virtio_pci_device import VirtioPciDeviceParams

__all__ = ["BlkDeviceHarness", "PRESETS", "device_params", "make_top", "run_job", "CLOCK_NS"]

CLOCK_NS = 8
"""The user clock of the simulations: 125 MHz, what a Gen1 x1 / Gen2 x1 core gives."""

_PCI_KNOBS = ("width", "num_queues", "msix_vectors", "bar_64bit", "max_queue_size",
              "reorder_depth", "max_batch", "max_block", "max_chain_len", "max_used_batch",
              "fetch_low_water",
              "dma_tags", "dma_cpl_buffer_bytes", "dma_read_slots")
_BLK_KNOBS = ("capacity", "disk_banks", "disk_stripe", "disk_jitter", "disk_slots",
              "size_max", "max_requests", "max_descriptors", "max_chunk", "max_reads",
              "max_writes")

_BASE = dict(width=64, num_queues=2, msix_vectors=3, bar_64bit=False, link_speed=1,
             link_width=1, max_queue_size=256, reorder_depth=64, max_batch=16, max_block=32,
             max_chain_len=64, max_used_batch=16, fetch_low_water=8, dma_tags=32,
             dma_cpl_buffer_bytes=4096, dma_read_slots=16, capacity=256, disk_banks=4,
             disk_stripe=8, disk_latency=[4, 40, 120, 400], disk_jitter=16, disk_slots=16,
             serial="virtio-inorder-0001", size_max=65536, max_requests=16,
             max_descriptors=16, max_chunk=4096, max_reads=16, max_writes=16)

PRESETS: dict[str, dict] = {
    # Every preset fetches a queue's available ring only at 8 or fewer buffers in flight, so
    # a deep queue is fetched in batches (hdl/virtio/avail_fetcher.py, docs/device.md).
    # The demo's and the tests' main build: MSI-X, two queues, a 128 KiB disk whose banks
    # answer after 32 ns .. 3.2 us, so requests finish out of order.
    "msix": dict(_BASE),
    # What QEMU's multi-process proxy can drive: INTx only, 32-bit BAR0, one queue; a 1 MiB
    # disk, room for a small file system.
    "intx": dict(_BASE, num_queues=1, msix_vectors=0, capacity=2048),
    # The benchmark's: a disk that answers at once and more requests in service, so the link
    # is the bottleneck; Gen2 x4 needs the 128-bit data path.
    # A 1 MiB disk leaves room for 64 non-overlapping 4 KiB requests.
    "bench_gen1x1": dict(_BASE, num_queues=1, msix_vectors=2, capacity=2048,
                         disk_latency=[2, 2, 2, 2], disk_jitter=1, max_requests=32,
                         disk_slots=32),
    "bench_gen2x4": dict(_BASE, width=128, num_queues=1, msix_vectors=2, capacity=2048,
                         link_speed=2, link_width=4, disk_latency=[2, 2, 2, 2], disk_jitter=1,
                         max_requests=32, disk_slots=32),
}


def device_params(knobs: Mapping[str, object]) -> VirtioBlkDeviceParams:
    """The device parameters a knob dict (one of :data:`PRESETS`, possibly changed) means."""
    unknown = set(knobs) - set(_PCI_KNOBS) - set(_BLK_KNOBS) - {
        "link_speed", "link_width", "disk_latency", "serial"}
    if unknown:
        raise ValueError(f"unknown device knobs: {sorted(unknown)}")
    pci = VirtioPciDeviceParams(
        link=LinkParams(speed=knobs["link_speed"], width=knobs["link_width"]),
        **{k: knobs[k] for k in _PCI_KNOBS if k in knobs})
    return VirtioBlkDeviceParams(
        pci=pci, disk_latency=tuple(knobs["disk_latency"]),
        serial=str(knobs["serial"]).encode(),
        **{k: knobs[k] for k in _BLK_KNOBS if k in knobs})


class BlkDeviceHarness(wiring.Component):
    """:class:`VirtioBlkDevice` with the DMA credit limits tied off (see the module)."""

    def __init__(self, params: VirtioBlkDeviceParams):
        self.device = VirtioBlkDevice(params)
        members = dict(self.device.signature.members)
        del members["credits"]
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.device = device = self.device
        for name, member in self.signature.members.items():
            if member.is_port:
                if member.flow == wiring.In:
                    m.d.comb += getattr(device, name).eq(getattr(self, name))
                else:
                    m.d.comb += getattr(self, name).eq(getattr(device, name))
            elif name == "rx":
                wiring.connect(m, wiring.flipped(self.rx), device.rx)
            else:
                wiring.connect(m, device.tx, wiring.flipped(self.tx))
        m.d.comb += device.credits.eq(UNLIMITED_CREDITS)
        return m


def make_top(knobs: Mapping[str, object]) -> BlkDeviceHarness:
    return BlkDeviceHarness(device_params(knobs))


def run_job(preset: str, testcase: str, job: Mapping[str, object],
            seed: int | None = None) -> tuple[dict, str | None]:
    """Run one job of ``sim/blk_device_tb.py`` (``demo`` or ``bench``) on the ``preset``
    build: the job goes in as JSON in ``BLK_JOB``, the testbench writes its results to the
    file named by ``BLK_RESULT``. Returns ``(results, error)``: the results written (empty
    if none were) and, when the cocotb test failed, the runner's message, else None."""
    from sim.runner import run

    knobs = PRESETS[preset]
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        error = None
        try:
            run(functools.partial(make_top, knobs), toplevel="blk_device",
                test_module="sim.blk_device_tb", params=knobs, testcase=testcase,
                extra_env={"BLK_JOB": json.dumps(job), "BLK_RESULT": str(result_file)},
                seed=seed, public="ports")
        except AssertionError as exc:
            error = str(exc)
        results = json.loads(result_file.read_text()) if result_file.exists() else {}
    return results, error
