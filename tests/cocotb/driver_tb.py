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

import cocotb
from cocotb.triggers import Timer
from cocotb.utils import get_sim_time
from cocotbext.pcie.core import RootComplex

from hdl.virtio.spec import (
    BlkConfig, BlkFeature, DeviceStatus, Feature, PciCapCfgType, VirtioBlkStatus,
    VirtioBlkType, feature_mask, pci_device_id, DeviceType, PCI_VENDOR_ID,
)
from sim.driver import (
    BlkRequest, BlkWorkload, DriverError, FeaturesRefused, GoldenDisk, HostMemory, IrqMode,
    Mix, TrafficMonitor, VirtioBlk, WorkloadConfig, find_virtio_functions,
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
        config = self.devices[index].config
        return GoldenDisk(config.capacity, config.image)

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


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def smoke(dut):
    tb = TB(dut)
    await tb.enumerate()
    blk = tb.blk()
    await blk.probe()
    req = await blk.get_id()
    assert req.ok and req.result == tb.devices[0].config.serial.ljust(20, b"\0"), req
    data = tb.rng.randbytes(4096)
    req = await blk.write(8, data, segments=[512, 3072, 512], scatter=True)
    assert req.ok, req
    req = await blk.read(8, 4096)
    assert req.ok and req.result == data
    result = await tb.workload(blk).run(WorkloadConfig(requests=40, queue_depth=8))
    check(result, "smoke")
    tb.log.info("smoke: %s", result)
