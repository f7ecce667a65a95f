"""A Linux-like virtio-pci driver model over a cocotbext-pcie root complex.

Layers, bottom up (each file says which Linux code and which virtio 1.2 sections it
follows; `docs/driver-model.md` walks through them):

* :mod:`~sim.driver.memory`: host memory for rings and buffers, with allocation kinds;
* :mod:`~sim.driver.transport`: the modern virtio-pci registers (``virtio_pci_modern_dev``);
* :mod:`~sim.driver.virtqueue`: the split ring, driver side (``virtio_ring``);
* :mod:`~sim.driver.device`: initialisation, queue set-up, MSI-X / INTx (``virtio_pci``);
* :mod:`~sim.driver.blk`: the block driver (``virtio_blk``);
* :mod:`~sim.driver.workload`: random request mixes checked against a golden disk;
* :mod:`~sim.driver.traffic`: the device's memory traffic, classified.
"""
from .blk import BLK_DRIVER_FEATURES, BlkRequest, BlkStats, BlkSummary, VirtioBlk
from .device import (
    TRANSPORT_FEATURES, DriverError, FeaturesRefused, InterruptStats, IrqMode, VirtioPciDriver,
    VqSpec,
)
from .memory import DmaKind, HostMemory
from .traffic import DeviceTraffic, TrafficMonitor
from .transport import MmioCounters, NotVirtio, VirtioPciTransport, find_virtio_functions
from .virtqueue import NoSpace, SplitVirtqueue, VirtqueueBroken, VirtqueueStats
from .workload import (
    BlkWorkload, GoldenDisk, Mix, WorkloadConfig, WorkloadResult, run_requests, wait_for,
)

__all__ = [
    "BLK_DRIVER_FEATURES", "BlkRequest", "BlkStats", "BlkSummary", "VirtioBlk",
    "TRANSPORT_FEATURES", "DriverError", "FeaturesRefused", "InterruptStats", "IrqMode",
    "VirtioPciDriver", "VqSpec", "DmaKind", "HostMemory", "DeviceTraffic", "TrafficMonitor",
    "MmioCounters", "NotVirtio", "VirtioPciTransport", "find_virtio_functions", "NoSpace",
    "SplitVirtqueue", "VirtqueueBroken", "VirtqueueStats", "BlkWorkload", "GoldenDisk", "Mix",
    "WorkloadConfig", "WorkloadResult", "run_requests", "wait_for",
]
