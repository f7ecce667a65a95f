"""cocotb side of test_pcie7x_device.py: the virtio-blk device behind the 7-series block model.

Expected values come from the PCIe and virtio specifications and the board parameters
(capability IDs and offsets, virtio 1.2 §4.1.4 structures, the BAR0 map of
``docs/architecture.md``) and from the golden disk, never from the RTL.
"""
import dataclasses
import json
import os
import random
import struct

import cocotb
from cocotbext.pcie.core import Device
from cocotbext.pcie.core.caps import PciCapId

from boards.device import DeviceParams
from hdl.virtio.spec import DeviceStatus, Feature, VirtioBlkType
from sim.blk_device_tb import BlkDeviceTB, pattern
from sim.driver import BlkRequest, IrqMode, WorkloadConfig, run_requests
from sim.pcie7x_model import MSIX_CAP, PCIE_CAP, PM_CAP, Pcie7xBlockModel

_KNOBS = json.loads(os.environ["DUT_PARAMS"])
PARAMS = DeviceParams(**{f.name: _KNOBS[f.name] for f in dataclasses.fields(DeviceParams)})

# Capability IDs (PCI Code and ID Assignment Specification §2).
CAP_PM, CAP_EXP, CAP_VNDR, CAP_MSIX = 0x01, 0x10, 0x09, 0x11
# virtio 1.2 §4.1.4: cfg_type values and the size of each structure.
COMMON, NOTIFY, ISR, DEVICE, PCI_CFG = 1, 2, 3, 4, 5
VIRTIO_PCI_CAP_LEN = 16
VIRTIO_PCI_NOTIFY_CAP_LEN = 20
VIRTIO_PCI_CFG_CAP_LEN = 20
# The user-defined range starts right after the block's MSI-X capability (0x9C + 12), and
# the five capabilities follow one another.
VENDOR_PTRS = [0xA8, 0xB8, 0xCC, 0xDC, 0xEC]
WINDOW = 0x1000         # each virtio structure's BAR0 window (docs/architecture.md)
# virtio_blk_config.capacity (virtio 1.2 §5.2.4) is the first field of the device window.
BLK_CAPACITY = 0


class TB(BlkDeviceTB):
    """The whole-device bench with the block model on the root port instead of a bridge."""

    def __init__(self, dut):
        # Idle beats on m_axis_rx and back-pressure on s_axis_tx; cocotb seeds `random`
        # from SEED, so a run replays.
        self.model = Pcie7xBlockModel(dut, PARAMS, rng=random.Random(random.getrandbits(32)),
                                      rx_idle=0.2, tx_ready=0.8)
        super().__init__(dut, endpoint=Device(self.model))

    async def start(self):
        self.model.start()
        await super().start()


@cocotb.test()
async def enumerate_probe_write_read(dut):
    tb = TB(dut)
    await tb.start()
    dev = tb.dev
    assert (dev.vendor_id, dev.device_id) == (PARAMS.vendor_id, PARAMS.device_id)
    assert dev.class_code == PARAMS.class_code
    assert dev.bar_size[0] == PARAMS.bar0_size

    # The block's capabilities, then the RTL's virtio capabilities from 0xA8.
    assert dev.capabilities == [(CAP_PM, PM_CAP), (CAP_EXP, PCIE_CAP), (CAP_MSIX, MSIX_CAP)] + \
        [(CAP_VNDR, p) for p in VENDOR_PTRS], f"capability list {dev.capabilities}"
    expected = [
        (COMMON, VIRTIO_PCI_CAP_LEN, PARAMS.common_cfg_offset, WINDOW),
        (NOTIFY, VIRTIO_PCI_NOTIFY_CAP_LEN, PARAMS.notify_offset, WINDOW),
        (ISR, VIRTIO_PCI_CAP_LEN, PARAMS.isr_offset, WINDOW),
        (DEVICE, VIRTIO_PCI_CAP_LEN, PARAMS.device_cfg_offset, WINDOW),
        (PCI_CFG, VIRTIO_PCI_CFG_CAP_LEN, 0, 0),
    ]
    for ptr, (cfg_type, cap_len, offset, length) in zip(VENDOR_PTRS, expected):
        raw = bytes(await dev.config_read(ptr, cap_len))
        vndr, got_len, got_type, bar = raw[0], raw[2], raw[3], raw[4]
        got_offset, got_length = struct.unpack_from("<II", raw, 8)
        assert (vndr, got_len, got_type, bar, got_offset, got_length) == \
            (CAP_VNDR, cap_len, cfg_type, 0, offset, length), f"capability at {ptr:#x}: {raw.hex()}"
        if cfg_type == NOTIFY:
            assert struct.unpack_from("<I", raw, 16)[0] == PARAMS.notify_off_multiplier
    table = await dev.capability_read_dword(PciCapId.MSIX, 4)
    pba = await dev.capability_read_dword(PciCapId.MSIX, 8)
    control = await dev.capability_read_word(PciCapId.MSIX, 2)
    assert (control & 0x7FF) + 1 == PARAMS.msix_vectors
    assert (table, pba) == (PARAMS.msix_table_offset, PARAMS.msix_pba_offset)   # BIR 0

    # Linux-like initialisation: features with IN_ORDER, MSI-X through the block's capability.
    blk = tb.driver(in_order=True)
    await blk.probe()
    assert blk.has(Feature.IN_ORDER) and blk.has(Feature.VERSION_1)
    assert blk.driver.irq_mode in (IrqMode.MSIX_PER_VQ, IrqMode.MSIX_SHARED), blk.driver.irq_mode
    assert tb.model.msix_cap.msix_enable and int(dut.cfg_interrupt_msixenable.value) == 1
    assert int(dut.cfg_command.value) & 0b110 == 0b110          # Memory Space, Bus Master
    status = await blk.driver.transport.get_status()
    assert status & DeviceStatus.DRIVER_OK, f"status {status:#x}"
    assert blk.capacity == _KNOBS["capacity"]

    # The PCI configuration access window: forwarded DWs of the 0xEC capability, through
    # the block, read the device configuration's capacity as BAR0 does.
    via_cfg = await blk.driver.transport.pci_cfg_read(0, PARAMS.device_cfg_offset + BLK_CAPACITY, 4)
    assert via_cfg == _KNOBS["capacity"] & 0xFFFF_FFFF, f"capacity via VIRTIO_PCI_CAP_PCI_CFG {via_cfg}"

    # Write several sectors at a few places, four requests in flight, then read them back.
    capacity = _KNOBS["capacity"]
    extents = [(0, 8), (17, 3), (capacity // 2, 16), (capacity - 4, 4)]
    writes = [BlkRequest(VirtioBlkType.OUT, s, data=pattern(s, n, salt=0x7A))
              for s, n in extents]
    await run_requests(blk, writes, 4, queue=None)
    for req in writes:
        assert req.ok, f"write at sector {req.sector}: status {req.status}"
        tb.golden.write_done(req.sector, req.data)
    reads = [BlkRequest(VirtioBlkType.IN, s, length=n * 512) for s, n in extents]
    await run_requests(blk, reads, 4, queue=None)
    for req in reads:
        assert req.ok, f"read at sector {req.sector}: status {req.status}"
        bad = tb.golden.mismatches(req.sector, req.result)
        assert not bad, f"read at sector {req.sector}: sectors {bad[:8]} differ from the golden disk"
    # A sector never written reads as zeros (the disk starts empty).
    (zero,) = [BlkRequest(VirtioBlkType.IN, 40, length=512)]
    await run_requests(blk, [zero], 1, queue=None)
    assert zero.ok and zero.result == bytes(512)

    # A short random mix (reads, writes, flushes, GET_ID, scattered buffers) at queue depth
    # 8, then the whole disk read back against the golden disk.
    result = await tb.workload(blk).run(WorkloadConfig(requests=40, queue_depth=8))
    assert result.requests and not result.failures, result.failures[:5]
    failures = await tb.verify_disk(blk)
    assert not failures, failures[:5]

    # The completions were signalled with MSI-X messages the root complex delivered.
    msix = sum(blk.driver.irq_stats.msix.values())
    assert msix >= 1, f"no MSI-X interrupt ({blk.driver.irq_stats})"
    assert blk.driver.irq_stats.intx == 0
    tb.log.info("%d sectors written and read back, %d mixed requests, whole disk verified; "
                "%d MSI-X interrupts; %d TLPs to the RTL, %d back, %d s_axis_tx beats",
                sum(n for _, n in extents), result.requests, msix,
                tb.model.to_rtl, tb.model.from_rtl, tb.model.collector.beats)
    await blk.remove()
