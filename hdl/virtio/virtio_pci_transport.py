"""The virtio-pci modern transport: BAR0 windows and the PCI cfg window in, engine controls out."""
from amaranth.hdl import Cat, Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.register_bus import RegisterBus
from hdl.virtio.common_config import CommonConfig
from hdl.virtio.interrupt_router import InterruptRouter
from hdl.virtio.isr_register import IsrRegister
from hdl.virtio.notify_region import NotifyRegion
from hdl.virtio.pci_cfg_access import PciCfgAccess
from hdl.virtio.register_bus_arbiter import RegisterBusArbiter
from hdl.virtio.spec import MAX_QUEUE_SIZE
from hdl.virtio.transport_map import TransportMap
from hdl.virtio.virtqueue_port import VirtqConfig, VirtqFeatures

__all__ = ["VirtioPciTransport", "TransportCounters"]

TransportCounters = data.StructLayout({
    "notify_ignored": 16,       # notifications for a missing or disabled queue, or before
                                # DRIVER_OK
    "features_refused": 16,     # FEATURES_OK writes refused
    "writes_ignored": 16,       # common configuration writes refused (see CommonConfig)
    "cfg_access_refused": 16,   # pci_cfg_data accesses that broke §4.1.4.9.2's rules
    "device_resets": 16,        # completed device resets
})
"""Free-running, wrapping counters of what the transport refused or did (``rst`` clears)."""


class VirtioPciTransport(wiring.Component):
    """Everything virtio-pci (virtio 1.2 §4.1) between the PCIe function and the engine.

    The four BAR0 windows of ``transport_map`` come in on ``regs`` (from the function's BAR
    completer) and the forwarded ``VIRTIO_PCI_CAP_PCI_CFG`` fields on ``cfg_ext``. Each
    window's client is shared, round robin, between the BAR completer and the PCI cfg
    window (:class:`RegisterBusArbiter`):

    * ``common``: :class:`CommonConfig` (features, device status, reset, queues);
    * ``isr``: :class:`IsrRegister`, whose non-zero byte is ``intx``;
    * ``device``: forwarded on ``device_cfg`` to the backend, which serves it;
    * ``notify``: :class:`NotifyRegion`, doorbells on ``doorbell``.

    The engine's ``notify`` and the configuration change events go through
    :class:`InterruptRouter` to ``msix`` or the ISR. See ``docs/virtio-transport.md``.

    Reset: ``rst`` (the function's reset) clears everything; a device reset (status 0)
    clears the common configuration, the ISR and a pending configuration message, after
    the engine and backend report ``idle`` under their resets.

    Parameters
    ----------
    num_queues : int
    max_queue_size : int
    msix_vectors : int
        MSI-X Table Size of the function (0: INTx only, no ``msix`` port).
    device_features : int
        The 64 feature bits offered (must include VERSION_1).
    transport_map : TransportMap
    pci_cfg_offset : int
        Configuration-space offset of the ``VIRTIO_PCI_CAP_PCI_CFG`` capability (the
        function's ``vendor_cap_offsets[PCI_CFG_CAP_INDEX]``).

    Attributes
    ----------
    regs : In(Signature({name: Out(RegisterBus.Signature(...))}))
        The function's BAR0 windows ``common``, ``isr``, ``device``, ``notify``.
    cfg_ext : In(RegisterBus.Signature(addr_width=6))
        The function's forwarded vendor-capability DWs.
    device_cfg : Out(RegisterBus.Signature(...))
        The device configuration window, for the backend to serve.
    msix_enable : In(1)
    msix : Out(stream.Signature(vector_width))
        Only when ``msix_vectors`` > 0.
    intx : Out(1)
        ISR status is non-zero (INTx level; the function ignores it while MSI-X is on).
    queue_config, features, driver_ok : Out
        To the engine (see :class:`CommonConfig`).
    driver_features : Out(64)
        Negotiated features, for the backend.
    doorbell : Out(stream.Signature(16))
        To the engine.
    notify : In(stream.Signature(4))
        The engine's used buffer notifications.
    needs_reset : In(1)
        The engine or backend needs a reset.
    config_changed : In(1)
        The backend changed its configuration (pulse).
    engine_reset, backend_reset : Out(1)
        Hold the engine (also while DRIVER_OK is clear) and the backend in reset.
    idle : In(1)
        The engine and the backend are both idle under their resets.
    device_status : Out(8)
    counters : Out(TransportCounters)
    """

    def __init__(self, *, num_queues: int, max_queue_size: int = MAX_QUEUE_SIZE,
                 msix_vectors: int, device_features: int,
                 transport_map: TransportMap = TransportMap(), pci_cfg_offset: int):
        if not isinstance(transport_map, TransportMap):
            raise TypeError(f"transport_map must be a TransportMap, not {transport_map!r}")
        if num_queues > transport_map.max_queues():
            raise ValueError(f"{num_queues} queues do not fit the notification window "
                             f"({transport_map.max_queues()} doorbells)")
        self.map = transport_map
        self.windows = transport_map.windows()
        self.common = CommonConfig(num_queues=num_queues, max_queue_size=max_queue_size,
                                   msix_vectors=msix_vectors, device_features=device_features,
                                   addr_width=self.windows[0].addr_width)
        self.router = InterruptRouter(num_queues=num_queues, msix_vectors=msix_vectors)
        self.pci_cfg = PciCfgAccess(cap_offset=pci_cfg_offset, windows=self.windows)
        self.num_queues = num_queues
        self.msix_vectors = msix_vectors
        by_name = {w.name: w for w in self.windows}
        members = {
            "regs": In(wiring.Signature({
                w.name: Out(RegisterBus.Signature(addr_width=w.addr_width))
                for w in self.windows})),
            "cfg_ext": In(RegisterBus.Signature(addr_width=6)),
            "device_cfg": Out(RegisterBus.Signature(addr_width=by_name["device"].addr_width)),
            "msix_enable": In(1),
            "intx": Out(1),
            "queue_config": Out(data.ArrayLayout(VirtqConfig, num_queues)),
            "features": Out(VirtqFeatures),
            "driver_features": Out(64),
            "driver_ok": Out(1),
            "doorbell": Out(stream.Signature(unsigned(16))),
            "notify": In(stream.Signature(unsigned(4))),
            "needs_reset": In(1),
            "config_changed": In(1),
            "engine_reset": Out(1),
            "backend_reset": Out(1),
            "idle": In(1),
            "device_status": Out(8),
            "counters": Out(TransportCounters),
        }
        if msix_vectors:
            self.vector_width = self.router.vector_width
            members["msix"] = Out(stream.Signature(unsigned(self.vector_width)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.common = common = self.common
        m.submodules.router = router = self.router
        m.submodules.pci_cfg = pci_cfg = self.pci_cfg
        aw = {w.name: w.addr_width for w in self.windows}
        m.submodules.isr = isr = IsrRegister(addr_width=aw["isr"])
        m.submodules.notify_region = notify = NotifyRegion(
            num_queues=self.num_queues, notify_off_multiplier=self.map.notify_off_multiplier,
            addr_width=aw["notify"])

        # Each window: the BAR completer and the PCI cfg window share its client.
        wiring.connect(m, wiring.flipped(self.cfg_ext), pci_cfg.cfg)
        clients = {"common": common.bus, "isr": isr.bus, "notify": notify.bus,
                   "device": wiring.flipped(self.device_cfg)}
        for w in self.windows:
            arbiter = RegisterBusArbiter(addr_width=w.addr_width, masters=2)
            m.submodules[f"{w.name}_arbiter"] = arbiter
            wiring.connect(m, wiring.flipped(getattr(self.regs, w.name)), arbiter.inputs[0])
            wiring.connect(m, getattr(pci_cfg.bar, w.name), arbiter.inputs[1])
            wiring.connect(m, arbiter.client, clients[w.name])

        # Engine and backend controls.
        m.d.comb += [
            self.queue_config.eq(common.queue_config),
            self.features.eq(common.features),
            self.driver_features.eq(common.driver_features),
            self.driver_ok.eq(common.driver_ok),
            self.engine_reset.eq(common.engine_reset),
            self.backend_reset.eq(common.backend_reset),
            self.device_status.eq(common.status),
            common.idle.eq(self.idle),
            common.needs_reset.eq(self.needs_reset),
            common.config_changed.eq(self.config_changed),
            notify.driver_ok.eq(common.driver_ok),
            notify.queue_enabled.eq(Cat(common.queue_config[q].enable
                                        for q in range(self.num_queues))),
        ]
        wiring.connect(m, notify.doorbell, wiring.flipped(self.doorbell))

        # Interrupts.
        wiring.connect(m, wiring.flipped(self.notify), router.notify)
        m.d.comb += [
            router.config_event.eq(common.config_event),
            router.clear.eq(common.device_reset),
            router.msix_enable.eq(self.msix_enable),
            router.queue_vector.eq(common.queue_vector),
            router.config_vector.eq(common.config_vector),
            isr.set.eq(router.isr_set),
            isr.clear.eq(common.device_reset),
            self.intx.eq(isr.pending),
        ]
        if self.msix_vectors:
            wiring.connect(m, router.msix, wiring.flipped(self.msix))

        # Counters.
        c = self.counters
        m.d.sync += [
            c.notify_ignored.eq(notify.ignored),
            c.cfg_access_refused.eq(pci_cfg.refused),
            c.features_refused.eq(c.features_refused + common.events.features_refused),
            c.writes_ignored.eq(c.writes_ignored + common.events.write_ignored),
            c.device_resets.eq(c.device_resets + common.device_reset),
        ]
        return m
