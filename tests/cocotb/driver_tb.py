"""cocotb tests of the virtio driver model (sim/driver) against the reference device
(sim/refdev), through cocotbext-pcie's root complex. See test_driver.py.

Nothing here simulates RTL: the toplevel (anchor_top.SimAnchor) only gives cocotb a
simulator to schedule on. Expected values come from the spec (register map, status
sequence, used-ring rules), from the golden disk the workload keeps, and from what the
device model recorded, never from the driver's own view alone.
"""
from __future__ import annotations

import itertools
import logging
import random
from collections import Counter

import cocotb
from cocotb.triggers import Timer
from cocotbext.pcie.core import RootComplex
from cocotbext.pcie.core.caps import PciCapId

from hdl.virtio.spec import (
    PCI_VENDOR_ID, BlkConfig, BlkFeature, CommonCfg, DeviceStatus, DeviceType, Feature,
    PciCapCfgType, VirtioBlkType, feature_mask, pci_device_id,
)
from sim.driver import (
    BLK_DRIVER_FEATURES, TRANSPORT_FEATURES, BlkRequest, BlkWorkload, DriverError,
    FeaturesRefused, GoldenDisk, HostMemory, IrqMode, Mix, TrafficMonitor, VirtioBlk,
    WorkloadConfig, find_virtio_functions, run_requests, wait_for,
)
from sim.driver.transport import COMMON_CFG_MIN_BYTES
from sim.refdev import (
    MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET, REGION_OFFSETS, RefDeviceConfig, ReferenceBlkDevice,
)

SECTOR = 512
IN_ORDER = feature_mask(Feature.IN_ORDER)
EVENT_IDX = feature_mask(Feature.EVENT_IDX)
INDIRECT = feature_mask(Feature.INDIRECT_DESC)


class TB:
    """A root complex with one or more reference devices, each on its own root port."""

    def __init__(self, dut, *configs: RefDeviceConfig):
        self.log = dut._log
        for name in ("cocotb.pcie", "sim.driver", "sim.refdev"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.rng = random.Random(random.getrandbits(32))
        self.rc = RootComplex()
        self.rc.max_payload_size = 1            # 256 bytes, as the RTL supports
        self.devices = []
        for config in configs or (RefDeviceConfig(),):
            if config.image is None:
                config = _with_image(config, self.rng)
            device = ReferenceBlkDevice(config, random.Random(self.rng.getrandbits(32)))
            self.rc.make_port().connect(device)
            self.devices.append(device)
        self.memory = None
        self.monitor = None
        self.goldens: dict[int, GoldenDisk] = {}

    async def enumerate(self) -> None:
        await self.rc.enumerate()
        self.memory = HostMemory.from_root_complex(self.rc, 32 << 20)
        self.monitor = TrafficMonitor(self.rc, self.memory)
        self.functions = find_virtio_functions(self.rc)
        assert len(self.functions) == len(self.devices)

    def pci_dev(self, index: int = 0):
        """The enumerated PciDevice of device ``index`` (matched by bus number)."""
        device = self.devices[index]
        for dev in self.functions:
            if dev.bus_num == device.bus_num:
                return dev
        raise AssertionError(f"device {index} was not enumerated")

    def blk(self, index: int = 0, **kwargs) -> VirtioBlk:
        return VirtioBlk(self.rc, self.pci_dev(index), memory=self.memory,
                         monitor=self.monitor, intx_source=self.devices[index],
                         rng=random.Random(self.rng.getrandbits(32)), **kwargs)

    def golden(self, index: int = 0) -> GoldenDisk:
        """The golden disk of device ``index``, one for the whole test."""
        if index not in self.goldens:
            config = self.devices[index].config
            self.goldens[index] = GoldenDisk(config.capacity, config.image)
        return self.goldens[index]

    def workload(self, blk: VirtioBlk, index: int = 0, golden: GoldenDisk | None = None
                 ) -> BlkWorkload:
        config = self.devices[index].config
        return BlkWorkload(blk, golden or self.golden(index),
                           serial=config.serial.ljust(20, b"\0"),
                           rng=random.Random(self.rng.getrandbits(32)))


def _with_image(config: RefDeviceConfig, rng: random.Random) -> RefDeviceConfig:
    """The same configuration with random (so checkable) initial disk contents."""
    fields = {name: getattr(config, name) for name in config.__dataclass_fields__}
    fields["image"] = rng.randbytes(config.capacity * SECTOR)
    return RefDeviceConfig(**fields)


def check(result, what: str) -> None:
    assert not result.failures, f"{what}: {len(result.failures)} failures, first: " \
                                f"{result.failures[:5]}"


def queue_totals(function, attr: str) -> int:
    """A statistic summed over the device's current queue engines."""
    return sum(getattr(e.stats, attr) for e in function.engines.values())


def mask_off(*bits) -> int:
    return ~feature_mask(*bits)


# --- enumeration, capabilities, initialisation --------------------------------------------

@cocotb.test(timeout_time=20, timeout_unit="ms")
async def enumeration_and_capabilities(dut):
    """Identity, the capability walk and BAR0 map, Linux's status sequence, device
    configuration, the PCI configuration access window, a configuration change."""
    config = RefDeviceConfig(capacity=4096, num_queues=2, msix_vectors=4)
    tb = TB(dut, config)
    await tb.enumerate()
    dev = tb.pci_dev()
    assert (dev.vendor_id, dev.device_id) == (PCI_VENDOR_ID, pci_device_id(DeviceType.BLOCK))
    assert (dev.vendor_id, dev.device_id) == (0x1AF4, 0x1042)
    assert dev.revision_id >= 1 and dev.subsystem_id >= 0x40, "non-transitional (§4.1.2.1)"
    assert dev.class_code == 0x010000 and dev.subsystem_vendor_id == 0x1AF4
    assert dev.bar_size[0] == 0x8000
    assert await dev.msix_vec_count() == 4
    table = await dev.capability_read_dword(PciCapId.MSIX, 4)
    pba = await dev.capability_read_dword(PciCapId.MSIX, 8)
    assert (table, pba) == (MSIX_TABLE_OFFSET | 0, MSIX_PBA_OFFSET | 0), "BIR 0"

    blk = tb.blk()
    await blk.probe()
    t = blk.driver.transport
    expected = {PciCapCfgType.COMMON_CFG: REGION_OFFSETS["common"],
                PciCapCfgType.ISR_CFG: REGION_OFFSETS["isr"],
                PciCapCfgType.DEVICE_CFG: REGION_OFFSETS["device"],
                PciCapCfgType.NOTIFY_CFG: REGION_OFFSETS["notify"]}
    assert expected == {PciCapCfgType.COMMON_CFG: 0x0000, PciCapCfgType.ISR_CFG: 0x1000,
                        PciCapCfgType.DEVICE_CFG: 0x2000, PciCapCfgType.NOTIFY_CFG: 0x3000}
    for cfg_type, offset in expected.items():
        cap = t.caps[cfg_type]
        assert (cap.bar, cap.offset) == (0, offset), cap
        assert cap.length >= (COMMON_CFG_MIN_BYTES if cfg_type is PciCapCfgType.COMMON_CFG
                              else 1)
    assert t.caps[PciCapCfgType.NOTIFY_CFG].notify_off_multiplier == 4
    assert [c.cfg_type for c in t.all_caps] == [
        PciCapCfgType.COMMON_CFG, PciCapCfgType.NOTIFY_CFG, PciCapCfgType.ISR_CFG,
        PciCapCfgType.DEVICE_CFG, PciCapCfgType.PCI_CFG]

    # Linux's sequence (§3.1.1): reset, ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK.
    function = tb.devices[0].function
    A, D, F, O = (DeviceStatus.ACKNOWLEDGE, DeviceStatus.DRIVER, DeviceStatus.FEATURES_OK,
                  DeviceStatus.DRIVER_OK)
    assert await t.get_status() == A | D | F | O      # (a read: the posted writes landed)
    assert function.stats.status_writes == [0, A, A | D, A | D | F, A | D | F | O]
    offered = tb.devices[0].offered_features
    assert blk.features == offered & (BLK_DRIVER_FEATURES | TRANSPORT_FEATURES)
    assert function.driver_features == blk.features
    for bit in (Feature.IN_ORDER, Feature.EVENT_IDX, Feature.INDIRECT_DESC,
                Feature.ACCESS_PLATFORM, Feature.ORDER_PLATFORM, BlkFeature.MQ):
        assert blk.has(bit), f"{bit!r} offered but not negotiated"
    assert blk.driver.irq_mode == IrqMode.MSIX_PER_VQ and blk.num_queues == 2

    # Device configuration (§5.2.4) as the driver read it.
    assert (blk.capacity, blk.seg_max, blk.size_max, blk.blk_size) == (4096, 64, 65536, 512)
    assert blk.num_device_queues == 2
    assert blk.queue_depth == blk.queues[0].vq.size == 256

    # The same registers through the PCI configuration access capability (§4.1.4.9).
    common = REGION_OFFSETS["common"]
    assert await t.pci_cfg_read(0, common + CommonCfg.NUM_QUEUES, 2) == 2
    await t.pci_cfg_write(0, common + CommonCfg.QUEUE_SELECT, 1, 2)
    assert await t.common_read(CommonCfg.QUEUE_SELECT) == 1
    assert await t.pci_cfg_read(0, common + CommonCfg.QUEUE_ENABLE, 2) == 1
    assert await t.common_read(CommonCfg.QUEUE_DESC) == blk.queues[1].vq.layout.desc_addr
    assert await t.common_read(CommonCfg.QUEUE_MSIX_VECTOR) == 2
    capacity = await t.pci_cfg_read(0, REGION_OFFSETS["device"] + BlkConfig.CAPACITY, 4)
    assert capacity == 4096

    req = await blk.get_id()
    assert req.ok and req.result == config.serial.ljust(20, b"\0") and req.used_len == 21

    # A configuration change (§4.1.5.4): vector 0, the driver re-reads the capacity.
    tb.devices[0].backend.resize(6144)
    await wait_for(lambda: blk.config_updates == 1)
    assert blk.capacity == 6144 and blk.irq_stats.msix[0] == 1 and blk.irq_stats.config == 1

    await blk.remove()
    assert await t.get_status() == 0 and function.stats.resets == 2
    assert not function.engines


# --- feature negotiation -----------------------------------------------------------------

@cocotb.test(timeout_time=200, timeout_unit="ms")
async def negotiation_matrix(dut):
    """IN_ORDER x EVENT_IDX x INDIRECT_DESC on and off, with MSI-X and with INTx; a device
    that offers none of the three; refused features."""
    tb = TB(dut, RefDeviceConfig(capacity=1024, num_queues=2),
            RefDeviceConfig(capacity=1024, num_queues=1, msix_vectors=0,
                            features_off=IN_ORDER | EVENT_IDX | INDIRECT))
    await tb.enumerate()
    device, function = tb.devices[0], tb.devices[0].function
    golden = tb.golden(0)
    for in_order, event_idx, indirect, msix in itertools.product((False, True), repeat=4):
        mask = ~((0 if in_order else IN_ORDER) | (0 if event_idx else EVENT_IDX)
                 | (0 if indirect else INDIRECT))
        what = f"in_order={in_order} event_idx={event_idx} indirect={indirect} msix={msix}"
        blk = tb.blk(0, features_mask=mask, use_msix=msix)
        await blk.probe()
        expected = device.offered_features & (BLK_DRIVER_FEATURES | TRANSPORT_FEATURES) & mask
        assert blk.features == expected == function.driver_features, what
        assert blk.driver.irq_mode == (IrqMode.MSIX_PER_VQ if msix else IrqMode.INTX), what
        intx_before = len(device.intx_messages)
        msix_before = function.stats.msix_sent
        result = await tb.workload(blk, golden=golden).run(
            WorkloadConfig(requests=16, queue_depth=4, sizes=(512, 1024)))
        check(result, what)
        elements = queue_totals(function, "elements")
        assert elements == 16, what
        indirect_elements = queue_totals(function, "indirect_elements")
        assert indirect_elements == (elements if indirect else 0), \
            f"{what}: {indirect_elements} of {elements} requests used an indirect table"
        assert queue_totals(function, "in_order_violations") == 0, what
        if msix:
            assert blk.irq_stats.msix and not blk.irq_stats.intx, what
            assert len(device.intx_messages) == intx_before, what
        else:
            assert blk.irq_stats.intx and not blk.irq_stats.msix, what
            assert function.stats.msix_sent == msix_before, what
            assert len(device.intx_messages) > intx_before, what
        await blk.remove()

    # A device without IN_ORDER / EVENT_IDX / INDIRECT_DESC and without MSI-X.
    blk = tb.blk(1)
    await blk.probe()
    assert not blk.features & (IN_ORDER | EVENT_IDX | INDIRECT)
    assert blk.driver.irq_mode == IrqMode.INTX
    check(await tb.workload(blk, 1).run(WorkloadConfig(requests=12, queue_depth=4)), "minimal")

    # The driver gives up without VERSION_1 and says so with FAILED (§3.1.1 step 8).
    bad = tb.blk(0, features_mask=mask_off(Feature.VERSION_1))
    try:
        await bad.probe()
        raise AssertionError("probe without VERSION_1 succeeded")
    except DriverError:
        pass
    assert await bad.driver.transport.get_status() & DeviceStatus.FAILED

    # The device refuses features it does not offer, or a set without VERSION_1 (§3.1.1).
    function1 = tb.devices[1].function
    t = blk.driver.transport
    for features in (feature_mask(Feature.VERSION_1, Feature.IN_ORDER),
                     feature_mask(BlkFeature.BLK_SIZE)):
        await t.reset()
        await t.add_status(DeviceStatus.ACKNOWLEDGE)
        await t.add_status(DeviceStatus.DRIVER)
        try:
            await blk.driver.write_features(features)
            raise AssertionError(f"device accepted features {features:#x}")
        except FeaturesRefused:
            pass
        status = await t.get_status()
        assert not status & DeviceStatus.FEATURES_OK and status & DeviceStatus.FAILED
    assert function1.stats.features_refused == 2


# --- data integrity ------------------------------------------------------------------------

async def data_integrity(dut, in_order: bool) -> None:
    tb = TB(dut, RefDeviceConfig(capacity=4096, num_queues=1, latency_ns=(100, 5000)))
    await tb.enumerate()
    mask = ~0 if in_order else mask_off(Feature.IN_ORDER)
    golden = tb.golden()
    blk = tb.blk(features_mask=mask)
    await blk.probe()
    assert blk.has(Feature.IN_ORDER) == in_order
    workload = tb.workload(blk, golden=golden)
    seen = set()
    for depth in (1, 2, 4, 8, 16, 32, 64):
        result = await workload.run(WorkloadConfig(requests=max(24, 2 * depth),
                                                   queue_depth=depth))
        check(result, f"queue depth {depth}")
        seen |= set(result.by_type)
        tb.log.info("QD %2d: %d requests, %.0f IOPS, run length %.2f, p99 %.1f us", depth,
                    result.requests, result.iops, result.mean_run_length,
                    result.latency(99) / 1000)
    assert seen == {"IN", "OUT", "FLUSH", "GET_ID"}
    # Buffers at any byte address, split at any DW.
    result = await workload.run(WorkloadConfig(requests=32, queue_depth=16, buffer_align=1,
                                               segment_granularity=4))
    check(result, "unaligned buffers")
    await blk.remove()

    # No indirect descriptors, a ring of 64 and 64 requests in flight: requests wait for
    # descriptors (-ENOSPC) and go in as others complete.
    blk = tb.blk(features_mask=mask & mask_off(Feature.INDIRECT_DESC), queue_size=64,
                 queue_depth=64)
    await blk.probe()
    workload = tb.workload(blk, golden=golden)
    result = await workload.run(WorkloadConfig(requests=128, queue_depth=64, sizes=(4096,),
                                               mix=Mix(0.5, 0.5, 0, 0)))
    check(result, "ring full")
    assert blk.stats.requeues > 0, "the ring never filled up"
    assert blk.vq_stats().no_space > 0
    await blk.remove()
    disk = tb.devices[0].disk
    for sector, contents in golden.certain_image():
        assert disk.read(sector, 1) == contents, f"sector {sector} differs from the golden disk"


@cocotb.test(timeout_time=300, timeout_unit="ms")
async def data_integrity_in_order(dut):
    """Random IN/OUT/FLUSH/GET_ID at queue depths 1..64, 512 B and 4 KiB, scattered
    buffers, with VIRTIO_F_IN_ORDER."""
    await data_integrity(dut, True)


@cocotb.test(timeout_time=300, timeout_unit="ms")
async def data_integrity_unordered(dut):
    """The same without VIRTIO_F_IN_ORDER."""
    await data_integrity(dut, False)


# --- in-order reaping ----------------------------------------------------------------------

@cocotb.test(timeout_time=200, timeout_unit="ms")
async def in_order_batching(dut):
    """With IN_ORDER, out-of-order completions come back in avail order and batched; the
    used-ring runs the driver read are the ones the device wrote; without IN_ORDER, in
    completion order, one element per buffer."""
    wide = (100, 20_000)
    tb = TB(dut, RefDeviceConfig(capacity=2048, num_queues=1, latency_ns=wide),
            RefDeviceConfig(capacity=2048, num_queues=1, latency_ns=wide, max_batch=2))
    await tb.enumerate()
    control = {}
    for index, in_order in ((0, True), (0, False), (1, True)):
        what = f"device {index} in_order={in_order}"
        blk = tb.blk(index, features_mask=~0 if in_order else mask_off(Feature.IN_ORDER))
        await blk.probe()
        order: list[BlkRequest] = []
        reqs = [BlkRequest(VirtioBlkType.IN, tb.rng.randrange(2048 - 2), length=1024,
                           callback=order.append) for _ in range(160)]
        traffic = blk.traffic.snapshot()
        await run_requests(blk, reqs, depth=32)
        assert all(r.ok for r in reqs), what
        function = tb.devices[index].function
        driver_runs = blk.vq_stats().run_lengths
        device_runs = sum((e.stats.run_lengths for e in function.engines.values()), Counter())
        assert driver_runs == device_runs, f"{what}: read {driver_runs}, written {device_runs}"
        mean = blk.vq_stats().mean_run_length
        if in_order:
            assert order == reqs, f"{what}: completions not in avail order"
            assert mean > 1.5, f"{what}: mean run length {mean:.2f}"
            if index == 1:
                assert max(driver_runs) == 2, f"{what}: runs {driver_runs} exceed max_batch"
            else:
                control["in_order"] = (blk.traffic - traffic).control_tlps / len(reqs)
        else:
            assert order != reqs, f"{what}: completions happened to be in order"
            assert set(driver_runs) == {1} and mean == 1.0, what
            control["unordered"] = (blk.traffic - traffic).control_tlps / len(reqs)
        tb.log.info("%s: mean run length %.2f, runs %s", what, mean, dict(driver_runs))
        await blk.remove()
    tb.log.info("device control TLPs per 1 KiB read at QD 32: %.2f in order, %.2f not",
                control["in_order"], control["unordered"])
    assert control["in_order"] < control["unordered"]


# --- notification suppression --------------------------------------------------------------

@cocotb.test(timeout_time=200, timeout_unit="ms")
async def notification_suppression(dut):
    """Kicks and interrupts with and without EVENT_IDX: counted at both ends; batching of
    kicks; a driver polling with interrupts off; a device polling with doorbells off."""
    tb = TB(dut, RefDeviceConfig(capacity=1024, num_queues=1),
            RefDeviceConfig(capacity=1024, num_queues=1, poll_interval_ns=2000))
    await tb.enumerate()
    for event_idx in (False, True):
        what = f"event_idx={event_idx}"
        mask = ~0 if event_idx else mask_off(Feature.EVENT_IDX)
        blk = tb.blk(0, features_mask=mask)
        await blk.probe()
        assert blk.has(Feature.EVENT_IDX) == event_idx
        engine = tb.devices[0].function.engines[0]

        # One request at a time: every completion interrupts; every kick rings.
        n = 20
        for _ in range(n):
            assert (await blk.read(tb.rng.randrange(1000), 512)).ok
        vq = blk.vq_stats()
        assert vq.kick_checks == n and vq.kicks + vq.kicks_suppressed == n, what
        assert engine.stats.doorbells == vq.kicks == blk.mmio.notifies, what
        assert engine.stats.notifications == n == blk.irq_stats.msix[1] == vq.interrupts, what

        # Batches of 8: one kick_prepare per batch (blk-mq's bd->last).
        before = blk.vq_stats()
        for _ in range(4):
            batch = [BlkRequest(VirtioBlkType.IN, tb.rng.randrange(1000), length=512)
                     for _ in range(8)]
            await blk.submit_batch(batch, 0)
            for req in batch:
                assert (await req.wait()).ok
        after = blk.vq_stats()
        assert after.kick_checks - before.kick_checks == 4, what
        assert after.kicks - before.kicks <= 4, what
        assert engine.stats.doorbells == after.kicks, what

        # The driver polls with interrupts off: the device sends none (§2.7.7).
        sent, received = engine.stats.notifications, blk.irq_stats.msix[1]
        blk.start_polling(0, 1000)
        result = await tb.workload(blk).run(WorkloadConfig(requests=40, queue_depth=8,
                                                           mix=Mix(1, 1, 0, 0)))
        check(result, what)
        # The device decides on its last notification after the last used->idx write,
        # which the poller may have seen already.
        await Timer(5000, "ns")
        assert engine.stats.notifications == sent and blk.irq_stats.msix[1] == received, what
        assert engine.stats.notifications_suppressed > 0, what
        blk.stop_polling(0)
        assert (await blk.read(0, 512)).ok
        assert engine.stats.notifications == sent + 1, what
        await blk.remove()

        # A device that polls never wants a doorbell: the driver must not ring one (once
        # the device's setting, written at DRIVER_OK, has landed in memory).
        blk = tb.blk(1, features_mask=mask)
        await blk.probe()
        await Timer(5000, "ns")
        result = await tb.workload(blk, 1).run(WorkloadConfig(requests=30, queue_depth=4))
        check(result, f"polling device, {what}")
        vq = blk.vq_stats()
        assert vq.kick_checks > 0 and vq.kicks == 0, f"{what}: {vq.kicks} kicks"
        assert tb.devices[1].function.engines[0].stats.doorbells == 0, what
        await blk.remove()


# --- reset --------------------------------------------------------------------------------

def _ring_blocks(blk: VirtioBlk) -> list[tuple[int, int]]:
    return [(q.vq.block, q.vq.layout.avail_event + 2 - q.vq.block) for q in blk.queues]


@cocotb.test(timeout_time=300, timeout_unit="ms")
async def reset_mid_traffic(dut):
    """Reset with requests in flight (MSI-X, then INTx): the device reads 0 only when
    drained, never touches the old rings again, aborted requests fail, completed ones
    stand, and after re-initialisation everything checks against the golden disk."""
    tb = TB(dut, RefDeviceConfig(capacity=2048, num_queues=2, latency_ns=(500, 20_000)))
    await tb.enumerate()
    function = tb.devices[0].function
    golden = tb.golden()
    blk = tb.blk()
    await blk.probe()
    workload = tb.workload(blk, golden=golden)
    cfg = WorkloadConfig(requests=240, queue_depth=32, mix=Mix(0.4, 0.5, 0.05, 0.05))

    def completed() -> int:
        return sum(blk.stats.completed.values())

    task = cocotb.start_soon(workload.run(cfg))
    await wait_for(lambda: completed() >= 60)
    blocks = _ring_blocks(blk)
    in_flight = sum(q.vq.outstanding for q in blk.queues)
    aborted = await blk.reset_device(reinit=False)
    assert await blk.driver.transport.get_status() == 0 and function.stats.resets == 2
    assert not function.engines and not function.resetting
    assert 0 < aborted <= in_flight
    snapshot = [blk.memory.read(addr, n) for addr, n in blocks]
    await Timer(40_000, "ns")          # longer than any backend latency
    assert [blk.memory.read(addr, n) for addr, n in blocks] == snapshot, \
        "the device wrote to the rings after the reset completed"
    await blk.probe()
    result = await task
    check(result, "reset with MSI-X")
    assert result.aborted == aborted and result.requests + aborted == cfg.requests

    # Again, and come back with INTx.
    blk.use_msix = False
    task = cocotb.start_soon(workload.run(cfg))
    start = completed()
    await wait_for(lambda: completed() >= start + 60)
    aborted = await blk.reset_device()
    assert blk.driver.irq_mode == IrqMode.INTX
    assert function.stats.resets == 5, "probe, reset, probe, reset, probe"
    result = await task
    check(result, "reset, then INTx")
    assert result.aborted == aborted > 0

    # Every sector of the disk reads back as the golden disk says (aborted writes either).
    reqs = [BlkRequest(VirtioBlkType.IN, sector, length=4096) for sector in range(0, 2048, 8)]
    await run_requests(blk, reqs, depth=16)
    for req in reqs:
        assert req.ok and not golden.mismatches(req.sector, req.result), req.sector
    await blk.remove()


# --- several queues ------------------------------------------------------------------------

@cocotb.test(timeout_time=200, timeout_unit="ms")
async def multi_queue(dut):
    """Four queues with a vector each; fewer queues than the device has; four queues
    sharing one vector when the MSI-X table is too small (vp_find_vqs' fallback)."""
    tb = TB(dut, RefDeviceConfig(capacity=4096, num_queues=4, msix_vectors=8),
            RefDeviceConfig(capacity=4096, num_queues=4, msix_vectors=3))
    await tb.enumerate()
    blk = tb.blk(0)
    await blk.probe()
    assert blk.num_queues == 4 and blk.driver.irq_mode == IrqMode.MSIX_PER_VQ
    result = await tb.workload(blk).run(WorkloadConfig(requests=160, queue_depth=32, batch=2))
    check(result, "4 queues")
    function = tb.devices[0].function
    for index in range(4):
        assert function.engines[index].stats.elements >= 30, f"queue {index} starved"
        assert blk.irq_stats.msix[index + 1] > 0, f"no interrupt on vector {index + 1}"
        assert function.queue_regs[index].msix_vector == index + 1
    await blk.remove()

    blk = tb.blk(0, max_queues=2)
    await blk.probe()
    assert blk.num_queues == 2 and blk.num_device_queues == 4
    check(await tb.workload(blk).run(WorkloadConfig(requests=40, queue_depth=8)), "2 of 4")
    await blk.remove()

    blk = tb.blk(1)
    await blk.probe()
    assert blk.num_queues == 4 and blk.driver.irq_mode == IrqMode.MSIX_SHARED
    result = await tb.workload(blk, 1).run(WorkloadConfig(requests=80, queue_depth=16))
    check(result, "shared vector")
    assert set(blk.irq_stats.msix) == {1}, blk.irq_stats.msix
    assert all(e.stats.elements for e in tb.devices[1].function.engines.values())
    await blk.remove()


# --- bad input -----------------------------------------------------------------------------

@cocotb.test(timeout_time=100, timeout_unit="ms")
async def bad_chain_needs_reset(dut):
    """A chain the device must refuse (INDIRECT without INDIRECT_DESC): DEVICE_NEEDS_RESET
    and a configuration change notification (MSI-X, then INTx with the ISR), recovery by
    reset (docs/robustness.md)."""
    tb = TB(dut, RefDeviceConfig(capacity=1024, num_queues=1))
    await tb.enumerate()
    function = tb.devices[0].function
    for msix in (True, False):
        blk = tb.blk(features_mask=mask_off(Feature.INDIRECT_DESC), use_msix=msix)
        await blk.probe()
        assert (await blk.read(0, 512)).ok
        vq = blk.queues[0].vq
        req = BlkRequest(VirtioBlkType.FLUSH)
        await blk.submit(req, 0, kick=False)
        head = vq.ring.avail_entry((vq.avail_idx_shadow - 1) % vq.size)
        desc = vq.ring.desc(head)
        vq.ring.set_desc(head, desc._replace(flags=desc.flags | 4))   # VIRTQ_DESC_F_INDIRECT
        await vq.kick()
        await wait_for(lambda: blk.irq_stats.config == 1)
        status = await blk.driver.transport.get_status()
        assert status & DeviceStatus.DEVICE_NEEDS_RESET, f"status {status:#x}"
        error = function.engines[0].model.error
        assert error is not None and error.kind.name == "INDIRECT_NOT_NEGOTIATED"
        assert not req.done
        assert await blk.reset_device() == 1 and req.aborted
        assert not await blk.driver.transport.get_status() & DeviceStatus.DEVICE_NEEDS_RESET
        check(await tb.workload(blk).run(WorkloadConfig(requests=16, queue_depth=4)),
              f"after recovery, msix={msix}")
        await blk.remove()
