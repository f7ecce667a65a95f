"""cocotb side of test_pcie7x_device.py."""
import random
import struct

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge
from cocotbext.pcie.core import Device, RootComplex
from cocotbext.pcie.core.caps import PciCapId

from boards.nitefury import NitefuryBoard
from sim.pcie7x_model import MSIX_CAP, PCIE_CAP, PM_CAP, Pcie7xBlockModel

PARAMS = NitefuryBoard().params()

# Capability IDs (PCI Code and ID Assignment Specification §2).
CAP_PM, CAP_EXP, CAP_VNDR, CAP_MSIX = 0x01, 0x10, 0x09, 0x11
# virtio 1.2 §4.1.4: cfg_type values and the size of each structure.
COMMON, NOTIFY, ISR, DEVICE, PCI_CFG = 1, 2, 3, 4, 5
VIRTIO_PCI_CAP_LEN = 16
VIRTIO_PCI_NOTIFY_CAP_LEN = 20
VIRTIO_PCI_CFG_CAP_LEN = 20


class TB:
    """Clock, reset, the block model and a root complex, as one bench."""

    def __init__(self, dut):
        self.dut = dut
        self.rng = random.Random(random.getrandbits(64))
        self.model = Pcie7xBlockModel(dut, PARAMS, rng=self.rng)
        self.rc = RootComplex()
        self.rc.make_port().connect(Device(self.model))

    async def start(self):
        cocotb.start_soon(Clock(self.dut.clk, 8, unit="ns").start())
        self.dut.rst.value = 1
        for _ in range(4):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        self.model.start()

    async def enumerate(self):
        await self.rc.enumerate()
        return self.rc.find_device(self.model.pcie_id)


@cocotb.test()
async def enumeration_finds_virtio_capabilities(dut):
    """Enumeration walks the block's capabilities into the RTL's virtio capabilities, and
    each one reads back as virtio 1.2 §4.1.4 and the device parameters say."""
    tb = TB(dut)
    await tb.start()
    dev = await tb.enumerate()
    assert (dev.vendor_id, dev.device_id) == (PARAMS.vendor_id, PARAMS.device_id)
    assert dev.class_code == PARAMS.class_code
    assert dev.bar_size[0] == PARAMS.bar0_size

    vendor_ptrs = [0xA8, 0xB8, 0xCC, 0xDC, 0xEC]
    assert dev.capabilities == [(CAP_PM, PM_CAP), (CAP_EXP, PCIE_CAP), (CAP_MSIX, MSIX_CAP)] + \
        [(CAP_VNDR, p) for p in vendor_ptrs], f"capability list {dev.capabilities}"

    # Each vendor capability as Linux's virtio_pci_modern reads it: struct virtio_pci_cap.
    expected = [
        (COMMON, VIRTIO_PCI_CAP_LEN, PARAMS.common_cfg_offset, 0x3C),
        (NOTIFY, VIRTIO_PCI_NOTIFY_CAP_LEN, PARAMS.notify_offset,
         PARAMS.num_queues * PARAMS.notify_off_multiplier),
        (ISR, VIRTIO_PCI_CAP_LEN, PARAMS.isr_offset, 1),
        (DEVICE, VIRTIO_PCI_CAP_LEN, PARAMS.device_cfg_offset, 0x48),
        (PCI_CFG, VIRTIO_PCI_CFG_CAP_LEN, 0, 0),
    ]
    for ptr, (cfg_type, cap_len, offset, length) in zip(vendor_ptrs, expected):
        raw = bytes(await dev.config_read(ptr, cap_len))
        vndr, got_len, got_type, bar = raw[0], raw[2], raw[3], raw[4]
        got_offset, got_length = struct.unpack_from("<II", raw, 8)
        assert (vndr, got_len, got_type, bar, got_offset, got_length) == \
            (CAP_VNDR, cap_len, cfg_type, 0, offset, length), f"capability at {ptr:#x}: {raw.hex()}"
        if cfg_type == NOTIFY:
            assert struct.unpack_from("<I", raw, 16)[0] == PARAMS.notify_off_multiplier

    # MSI-X: the block's capability points into BAR0 at the device's offsets.
    table = await dev.capability_read_dword(PciCapId.MSIX, 4)
    pba = await dev.capability_read_dword(PciCapId.MSIX, 8)
    control = await dev.capability_read_word(PciCapId.MSIX, 2)
    assert (control & 0x7FF) + 1 == PARAMS.msix_vectors
    assert (table & ~7, table & 7, pba & ~7, pba & 7) == \
        (PARAMS.msix_table_offset, 0, PARAMS.msix_pba_offset, 0)
    assert tb.model.to_rtl >= len(vendor_ptrs) and tb.model.from_rtl >= len(vendor_ptrs)
    dut._log.info("%d TLPs to the RTL, %d back, %d s_axis_tx beats",
                  tb.model.to_rtl, tb.model.from_rtl, tb.model.collector.beats)


@cocotb.test()
async def standin_bar0_scratch_through_adapters(dut):
    """The stand-in's BAR0 scratch memory: random single-DW and byte writes, read back."""
    tb = TB(dut)
    await tb.start()
    dev = await tb.enumerate()
    await dev.enable_device()
    bar = dev.bar_window[0]
    shadow = {}
    for _ in range(40):
        offset = tb.rng.randrange(0, 4096, 4)
        if tb.rng.random() < 0.3:
            byte = tb.rng.randrange(4)
            value = tb.rng.randrange(256)
            await bar.write_byte(offset + byte, value)
            old = shadow.get(offset, None)
            if old is not None:
                shadow[offset] = old[:byte] + bytes([value]) + old[byte + 1:]
        else:
            data = tb.rng.randbytes(4)
            await bar.write(offset, data)
            shadow[offset] = data
    for offset, data in shadow.items():
        got = await bar.read(offset, 4)
        assert bytes(got) == data, f"BAR0 {offset:#x}: read {bytes(got).hex()}, wrote {data.hex()}"
    # The scratch memory is mirrored over BAR0 (4 KiB repeats).
    offset, data = next(iter(shadow.items()))
    mirror = offset + 0x1000 * tb.rng.randrange(1, PARAMS.bar0_size // 0x1000)
    assert bytes(await bar.read(mirror, 4)) == data
    dut._log.info("%d BAR0 DWs checked; %d TLPs to the RTL, %d back",
                  len(shadow), tb.model.to_rtl, tb.model.from_rtl)
