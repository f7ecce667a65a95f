"""The device-independent part of a virtio-pci driver: initialisation, queues, interrupts.

:class:`VirtioPciDriver` follows the driver initialisation of virtio 1.2 §3.1.1 the way
Linux's virtio core and ``virtio_pci_modern`` do it:

1. ``register_virtio_device``: reset (write 0, poll until 0 reads back), ACKNOWLEDGE;
2. ``virtio_dev_probe``: DRIVER; read both device feature windows; keep the features the
   device offers, the driver knows and the caller's mask allows; without VERSION_1 the
   modern transport gives up (``vp_modern_finalize_features``); write the driver features;
   FEATURES_OK and read the status back: a device that refuses clears it (§3.1.1 step 6),
   and the driver sets FAILED;
3. ``vp_modern_find_vqs``: MSI-X with one vector per queue, else MSI-X with one vector for
   the configuration change and one shared by all queues, else INTx (``vp_find_vqs``);
   each queue is read (``queue_size``, not yet enabled), allocated, sized, given its areas'
   addresses and its vector (read back: NO_VECTOR means the device refused, §4.1.5.1.2),
   and only when all are set up are they enabled;
4. ``virtio_device_ready``: DRIVER_OK.

Interrupts: MSI-X messages reach the handlers through the root complex's MSI machinery
(``PciDevice.alloc_irq_vectors``); vector 0 is the configuration change, the others run
``vring_interrupt`` of their queue (all queues for the shared vector). With INTx the driver
follows an INTx source (the object with ``intx_level`` and ``intx_changed`` that
``sim.pcie_bridge.PcieBridge`` and the reference device both have): while the line is
asserted it runs ``vp_interrupt``: read ISR (which clears it and lowers the line), a
configuration change on bit 1, and ``vring_interrupt`` for every queue. The line is
level-triggered, so a handler that leaves it asserted runs again.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cocotb
from cocotb.triggers import First, Timer

from hdl.virtio.spec import (
    VIRTIO_MSI_NO_VECTOR, DeviceStatus, Feature, IsrStatus, check_queue_size, feature_mask,
    feature_names,
)

from .memory import HostMemory
from .traffic import TrafficMonitor
from .transport import VirtioPciTransport, find_virtio_functions
from .virtqueue import SplitVirtqueue

__all__ = ["VirtioPciDriver", "VqSpec", "InterruptStats", "FeaturesRefused", "DriverError",
           "TRANSPORT_FEATURES", "IrqMode"]

log = logging.getLogger(__name__)

TRANSPORT_FEATURES = feature_mask(
    Feature.INDIRECT_DESC, Feature.EVENT_IDX, Feature.VERSION_1, Feature.ACCESS_PLATFORM,
    Feature.IN_ORDER, Feature.ORDER_PLATFORM)
"""Device-independent features this driver model implements (Linux's
``vring_transport_features`` keeps these; it also knows RING_PACKED, NOTIFICATION_DATA,
RING_RESET and SR_IOV, which the model does not). ACCESS_PLATFORM and ORDER_PLATFORM need no
work here: they tell a real driver to use the DMA API and real barriers."""


class DriverError(Exception):
    """Initialisation failed; the driver has set FAILED in device_status."""


class FeaturesRefused(DriverError):
    """The device cleared FEATURES_OK: it cannot work with the features written."""


class IrqMode:
    """How the queues interrupt (``vp_find_vqs`` policies)."""
    MSIX_PER_VQ = "msix-per-vq"
    MSIX_SHARED = "msix-shared"
    INTX = "intx"


@dataclass
class VqSpec:
    """One queue to set up: its callback (None: no interrupts wanted) and an optional size
    limit (the device's maximum otherwise)."""
    callback: Callable[[SplitVirtqueue], None] | None
    size: int | None = None


@dataclass
class InterruptStats:
    """Interrupts the driver received: MSI-X messages per vector, INTx handler runs, ISR
    reads that found nothing (a shared or late line), configuration changes."""
    msix: Counter = field(default_factory=Counter)
    intx: int = 0
    intx_none: int = 0
    config: int = 0

    @property
    def total(self) -> int:
        return sum(self.msix.values()) + self.intx


class _VectorRefused(Exception):
    pass


class VirtioPciDriver:
    """A virtio-pci modern driver core over a cocotbext-pcie root complex.

    Parameters
    ----------
    rc : cocotbext.pcie.core.RootComplex
        Already enumerated.
    dev : PciDevice, optional
        The function to drive; the first virtio function on the bus by default.
    memory : HostMemory, optional
        Where rings and buffers go; 16 MiB of the root complex's memory by default.
    monitor : TrafficMonitor, optional
        Counts the device's memory traffic; one is installed on ``rc`` by default (share one
        between drivers of the same root complex and memory).
    intx_source : object, optional
        Has ``intx_level`` (bool) and ``intx_changed`` (cocotb ``Event``); needed for INTx.
    status_poll_ns, irq_recheck_ns : int
        Reset poll interval; how long a level-triggered INTx that stays asserted after its
        handler waits before the handler runs again (unless the line changes first).

    Attributes
    ----------
    transport : VirtioPciTransport
    device_features, features : int
        What the device offered and what was negotiated.
    vqs : list[SplitVirtqueue]
    irq_mode : str or None
        One of :class:`IrqMode` once the queues are set up.
    irq_stats : InterruptStats
    monitor : TrafficMonitor
        The device's memory traffic, classified.
    config_changed : callable or None
        Called (synchronously) on a configuration change interrupt.
    """

    def __init__(self, rc, dev=None, *, memory: HostMemory | None = None,
                 monitor: TrafficMonitor | None = None, intx_source=None,
                 status_poll_ns: int = 200, irq_recheck_ns: int = 1000):
        if dev is None:
            found = find_virtio_functions(rc)
            if not found:
                raise DriverError("no virtio function on the bus (was the root complex "
                                  "enumerated?)")
            dev = found[0]
        self.rc = rc
        self.dev = dev
        self.transport = VirtioPciTransport(rc, dev, status_poll_ns=status_poll_ns)
        self.memory = memory if memory is not None else HostMemory.from_root_complex(rc)
        self.monitor = monitor if monitor is not None else TrafficMonitor(rc, self.memory)
        self.intx_source = intx_source
        self.irq_recheck_ns = irq_recheck_ns
        self.device_features = 0
        self.features = 0
        self.vqs: list[SplitVirtqueue] = []
        self.irq_mode: str | None = None
        self.irq_stats = InterruptStats()
        self.config_changed: Callable[[], None] | None = None
        self._probed_transport = False
        self._notify_offsets: dict[int, int] = {}
        self._vector_vqs: dict[int, list[SplitVirtqueue]] = {}
        self._msix_handlers: list[tuple[int, Callable]] = []
        self._intx_task = None
        self.last_reset_polls = 0

    def has(self, bit: int) -> bool:
        """Was feature ``bit`` negotiated?"""
        return bool(self.features >> int(bit) & 1)

    # --- initialisation (§3.1.1) --------------------------------------------------------------
    async def probe(self, driver_features: int, features_mask: int = ~0) -> int:
        """Reset the device and negotiate; returns the negotiated features.

        ``driver_features`` are the device-type bits the caller's driver implements (the
        transport's :data:`TRANSPORT_FEATURES` are added); ``features_mask`` turns any of
        them off.
        """
        if not self._probed_transport:
            await self.transport.probe()
            self._probed_transport = True
        t = self.transport
        self.last_reset_polls = await t.reset()
        await t.add_status(DeviceStatus.ACKNOWLEDGE)
        await t.add_status(DeviceStatus.DRIVER)
        self.device_features = await t.get_features()
        wanted = (driver_features | TRANSPORT_FEATURES) & features_mask
        self.features = self.device_features & wanted
        if not self.has(Feature.VERSION_1):
            await self.fail()
            raise DriverError("virtio: device uses modern interface but does not have "
                              "VIRTIO_F_VERSION_1 (or it was masked off)")
        return await self.write_features(self.features)

    async def write_features(self, features: int) -> int:
        """Write ``features`` and FEATURES_OK, then check the device kept FEATURES_OK
        (``virtio_features_ok``). Raises :class:`FeaturesRefused` (after setting FAILED)."""
        t = self.transport
        self.features = features
        await t.set_features(features)
        await t.add_status(DeviceStatus.FEATURES_OK)
        status = await t.get_status()
        if not status & DeviceStatus.FEATURES_OK:
            await self.fail()
            raise FeaturesRefused(f"virtio: device refuses features {feature_names(features)} "
                                  f"(status {int(status):#04x})")
        log.info("negotiated features: %s", ", ".join(feature_names(features)))
        return features

    async def fail(self) -> None:
        await self.transport.add_status(DeviceStatus.FAILED)

    async def ready(self) -> None:
        """``virtio_device_ready``: DRIVER_OK."""
        await self.transport.add_status(DeviceStatus.DRIVER_OK)

    # --- queues and interrupts ---------------------------------------------------------------
    async def find_vqs(self, specs: Sequence[VqSpec], *, use_msix: bool = True
                       ) -> list[SplitVirtqueue]:
        """Set up and enable the queues ``0 .. len(specs) - 1`` (``vp_modern_find_vqs``)."""
        if self.vqs:
            raise DriverError("queues are already set up; del_vqs() first")
        available = await self.transport.num_queues()
        if len(specs) > available:
            raise DriverError(f"{len(specs)} queues asked for, the device has {available}")
        table_size = await self.dev.msix_vec_count() if use_msix else -1
        if table_size > 0:
            with_callbacks = sum(1 for s in specs if s.callback is not None)
            for per_vq, vectors in ((True, 1 + with_callbacks), (False, 2)):
                if vectors > table_size:
                    continue
                try:
                    await self._find_vqs_msix(specs, per_vq, vectors)
                    break
                except _VectorRefused as why:
                    log.info("MSI-X with %s vectors refused (%s); falling back",
                             "per-queue" if per_vq else "shared", why)
                    await self._release_queues()
        if not self.vqs:
            if self.intx_source is None:
                raise DriverError("MSI-X is not available and there is no INTx source "
                                  "to follow (pass intx_source=)")
            await self._find_vqs_intx(specs)
        for vq in self.vqs:
            await self.transport.enable_queue(vq.index)
        return self.vqs

    async def _find_vqs_msix(self, specs: Sequence[VqSpec], per_vq: bool, vectors: int) -> None:
        got = await self.dev.alloc_irq_vectors(vectors, vectors)
        if got < vectors:
            raise _VectorRefused(f"the root complex allocated {got} vectors")
        self.irq_mode = IrqMode.MSIX_PER_VQ if per_vq else IrqMode.MSIX_SHARED
        self._request_vector(0)
        if await self.transport.config_vector(0) == VIRTIO_MSI_NO_VECTOR:
            raise _VectorRefused("config_msix_vector read back NO_VECTOR")
        next_vector = 1
        for index, spec in enumerate(specs):
            if spec.callback is None:
                vector = VIRTIO_MSI_NO_VECTOR
            elif per_vq:
                vector = next_vector
                next_vector += 1
            else:
                vector = 1
            vq = await self._setup_vq(index, spec, vector)
            if vector != VIRTIO_MSI_NO_VECTOR:
                if vector not in self._vector_vqs:
                    self._vector_vqs[vector] = []
                    self._request_vector(vector)
                self._vector_vqs[vector].append(vq)

    async def _find_vqs_intx(self, specs: Sequence[VqSpec]) -> None:
        self.irq_mode = IrqMode.INTX
        await self.transport.set_intx_disable(False)
        for index, spec in enumerate(specs):
            await self._setup_vq(index, spec, VIRTIO_MSI_NO_VECTOR)
        self._intx_task = cocotb.start_soon(self._intx_loop())

    async def _setup_vq(self, index: int, spec: VqSpec, vector: int) -> SplitVirtqueue:
        """``setup_vq`` of virtio_pci_modern."""
        t = self.transport
        num = await t.queue_size(index)
        if not num or await t.queue_enabled(index):
            raise DriverError(f"queue {index} is not available (size {num}) or already enabled")
        size = num if spec.size is None else min(num, spec.size)
        size = 1 << (size.bit_length() - 1)         # largest power of two not above it
        check_queue_size(size)
        vq = SplitVirtqueue(
            self.memory, index, size, in_order=self.has(Feature.IN_ORDER),
            event_idx=self.has(Feature.EVENT_IDX), indirect=self.has(Feature.INDIRECT_DESC),
            notify=self._notify, callback=spec.callback)
        self.vqs.append(vq)
        await t.set_queue_size(index, size)
        layout = vq.layout
        await t.queue_address(index, layout.desc_addr, layout.driver_addr, layout.device_addr)
        self._notify_offsets[index] = await t.notify_address(index)
        if vector != VIRTIO_MSI_NO_VECTOR:
            if await t.queue_vector(index, vector) == VIRTIO_MSI_NO_VECTOR:
                raise _VectorRefused(f"queue {index} vector {vector} read back NO_VECTOR")
        return vq

    async def _notify(self, vq: SplitVirtqueue) -> None:
        await self.transport.notify(vq.index, self._notify_offsets[vq.index])

    def _request_vector(self, vector: int) -> None:
        async def handler():
            self._msix_interrupt(vector)
        self.dev.request_irq(vector, handler)
        self._msix_handlers.append((vector, handler))

    def _msix_interrupt(self, vector: int) -> None:
        self.irq_stats.msix[vector] += 1
        if vector == 0:
            self._config_interrupt()
            return
        for vq in self._vector_vqs.get(vector, ()):
            vq.interrupt()

    def _config_interrupt(self) -> None:
        self.irq_stats.config += 1
        if self.config_changed is not None:
            self.config_changed()

    async def _intx_loop(self) -> None:
        source = self.intx_source
        changed = source.intx_changed
        while True:
            if not source.intx_level:
                changed.clear()
                if not source.intx_level:
                    await changed.wait()
                continue
            changed.clear()
            await self._vp_interrupt()
            if source.intx_level:
                await First(changed.wait(), Timer(self.irq_recheck_ns, "ns"))

    async def _vp_interrupt(self) -> None:
        isr = await self.transport.read_isr()
        if not isr:
            self.irq_stats.intx_none += 1
            return
        self.irq_stats.intx += 1
        if isr & IsrStatus.DEVICE_CONFIG:
            self._config_interrupt()
        for vq in self.vqs:
            vq.interrupt()

    # --- tear-down -------------------------------------------------------------------------
    async def reset(self) -> int:
        """``virtio_reset_device``: status 0, wait until the device reads 0. Returns the
        polls it took. The queues stay allocated (see :meth:`del_vqs`)."""
        self.last_reset_polls = await self.transport.reset()
        return self.last_reset_polls

    async def del_vqs(self) -> None:
        """``vp_del_vqs``: vectors back to NO_VECTOR, interrupts released, rings freed.
        Call after :meth:`reset` (the device must not use the rings any more)."""
        if self.irq_mode in (IrqMode.MSIX_PER_VQ, IrqMode.MSIX_SHARED):
            for vq in self.vqs:
                await self.transport.queue_vector(vq.index, VIRTIO_MSI_NO_VECTOR)
            await self.transport.config_vector(VIRTIO_MSI_NO_VECTOR)
        await self._release_queues()

    async def _release_queues(self) -> None:
        for vector, handler in self._msix_handlers:
            self.dev.msi_vectors[vector].cb.remove(handler)
        self._msix_handlers.clear()
        if self.dev.msix_enabled:
            await self.dev.free_irq_vectors()
        if self._intx_task is not None:
            self._intx_task.cancel()
            self._intx_task = None
        for vq in self.vqs:
            vq.free_rings()
        self.vqs.clear()
        self._vector_vqs.clear()
        self._notify_offsets.clear()
        self.irq_mode = None
