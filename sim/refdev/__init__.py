"""A pure-Python virtio-blk PCIe device built on the golden models, for the driver model.

* :mod:`~sim.refdev.blk`: :class:`ReferenceBlkDevice` (a cocotbext-pcie ``Device``) and its
  request backend;
* :mod:`~sim.refdev.function`: the virtio-pci modern transport as a cocotbext-pcie function;
* :mod:`~sim.refdev.queue`: one virtqueue: the golden split-ring model driven over DMA;
* :mod:`~sim.refdev.caps`: the virtio vendor capabilities;
* :mod:`~sim.refdev.shadow`: the device's copy of what it has read from host memory.
"""
from .blk import DEVICE_INDEPENDENT_FEATURES, BlkBackend, RefDeviceConfig, ReferenceBlkDevice
from .function import BAR0_SIZE, MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET, REGION_OFFSETS, \
    FunctionStats, VirtioPciFunction
from .queue import DeviceVirtqueue, QueueStats

__all__ = ["DEVICE_INDEPENDENT_FEATURES", "BlkBackend", "RefDeviceConfig", "ReferenceBlkDevice",
           "BAR0_SIZE", "MSIX_PBA_OFFSET", "MSIX_TABLE_OFFSET", "REGION_OFFSETS",
           "FunctionStats", "VirtioPciFunction", "DeviceVirtqueue", "QueueStats"]
