"""A complete virtio-pci device behind the raw TLP streams: function, DMA, transport, engine,
and a device backend given as a parameter."""
from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.hdl import Module, ResetInserter
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from hdl.pcie.bar_completer import BarCounters
from hdl.pcie.dma.dma_engine import DmaEngine
from hdl.pcie.dma.layouts import DmaStatus, FcCreditLimit
from hdl.pcie.params import FunctionIdentity, LinkParams
from hdl.pcie.pcie_function import PcieFunction, check_config_mode
from hdl.pcie.user_config_space import USER_CFG_BASE
from hdl.pcie.spec import FunctionControl, check_tlp_width, raw_tlp_signature
from hdl.stream_fifo import queue_stream
from hdl.virtio.device_backend import check_backend
from hdl.virtio.spec import Feature, MAX_QUEUE_SIZE, feature_mask
from hdl.virtio.transport_map import PCI_CFG_CAP_INDEX, TransportMap
from hdl.virtio.virtio_pci_transport import TransportCounters, VirtioPciTransport
from hdl.virtio.avail_fetcher import check_low_water
from hdl.virtio.virtqueue_engine import VirtqueueEngine
from hdl.virtio.virtqueue_port import MAX_QUEUES, VirtqError, VirtqStats

__all__ = ["VirtioPciDevice", "VirtioPciDeviceParams", "TRANSPORT_FEATURES"]

TRANSPORT_FEATURES = feature_mask(
    Feature.VERSION_1, Feature.IN_ORDER, Feature.INDIRECT_DESC, Feature.EVENT_IDX,
    Feature.ACCESS_PLATFORM, Feature.ORDER_PLATFORM)
"""Device-independent features every device built on the core offers (virtio 1.2 §6):
VERSION_1 (a device MUST offer it), IN_ORDER, INDIRECT_DESC and EVENT_IDX (the engine
implements them), ACCESS_PLATFORM (the device reaches memory through the platform's bus
addresses, so IOMMU / VFIO setups work) and ORDER_PLATFORM (a real device: the driver must
use the platform's memory barriers)."""

_ENGINE_READ_CHANNELS = 2       # ring_rd, desc_rd
_ENGINE_WRITE_CHANNELS = 1      # ctl_wr


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _power_of_two(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        and not value & (value - 1)


@dataclass(frozen=True)
class VirtioPciDeviceParams:
    """Every parameter of :class:`VirtioPciDevice`, checked together.

    PCIe function
        ``width`` (TLP and DMA data width, 64 or 128), ``identity``, ``bar_64bit``,
        ``msix_vectors`` (MSI-X Table Size 1..64, or 0 for an INTx-only build),
        ``max_payload_size_supported`` (encoding 0..5), ``link``, ``max_read_dw`` (longest
        BAR0 read served), ``transport_map`` (BAR0 layout and capabilities), ``config``
        (``"internal"``: the function's own configuration space; ``"external"``: a PCIe
        core's, which needs MSI-X, see :class:`~hdl.pcie.pcie_function.PcieFunction`),
        ``user_config_base`` (external mode: where the vendor capabilities start).
    Virtqueue engine
        ``num_queues`` (1..16), ``max_queue_size``, ``reorder_depth``, ``max_batch``,
        ``max_block``, ``max_chain_len``, ``max_used_batch``, ``fetch_low_water`` (see
        :class:`~hdl.virtio.virtqueue_engine.VirtqueueEngine`).
    DMA engine
        ``dma_tags``, ``dma_cpl_buffer_bytes``, ``dma_read_slots``, ``dma_timeout`` (see
        :class:`~hdl.pcie.dma.dma_engine.DmaEngine`).
    Features
        ``features`` the device-independent bits offered, a subset of
        :data:`TRANSPORT_FEATURES` that includes VERSION_1 (the backend adds its own).
    """
    width: int = 64
    identity: FunctionIdentity = field(default_factory=FunctionIdentity)
    bar_64bit: bool = False
    msix_vectors: int = 8
    max_payload_size_supported: int = 1
    link: LinkParams = field(default_factory=LinkParams)
    max_read_dw: int = 16
    transport_map: TransportMap = field(default_factory=TransportMap)
    num_queues: int = 4
    max_queue_size: int = MAX_QUEUE_SIZE
    reorder_depth: int = 128
    max_batch: int = 32
    max_block: int = 64
    max_chain_len: int = 128
    max_used_batch: int = 32
    fetch_low_water: int | None = None
    dma_tags: int = 32
    dma_cpl_buffer_bytes: int = 4096
    dma_read_slots: int = 32
    dma_timeout: int = 125_000
    features: int = TRANSPORT_FEATURES
    config: str = "internal"
    user_config_base: int = USER_CFG_BASE

    def __post_init__(self):
        check_tlp_width(self.width)
        for name, kind in (("identity", FunctionIdentity), ("link", LinkParams),
                           ("transport_map", TransportMap)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name} must be a {kind.__name__}, not "
                                f"{getattr(self, name)!r}")
        _check(isinstance(self.msix_vectors, int) and 0 <= self.msix_vectors <= 64,
               f"msix_vectors must be 0 (INTx only) to 64, not {self.msix_vectors!r}")
        _check(isinstance(self.num_queues, int) and 1 <= self.num_queues <= MAX_QUEUES,
               f"num_queues must be 1 to {MAX_QUEUES}, not {self.num_queues!r}")
        _check(self.num_queues <= self.transport_map.max_queues(),
               f"{self.num_queues} queues do not fit the notification window")
        _check(_power_of_two(self.max_queue_size) and self.max_queue_size <= MAX_QUEUE_SIZE,
               f"max_queue_size must be a power of two up to {MAX_QUEUE_SIZE} "
               f"(virtio 1.2 §2.7), not {self.max_queue_size!r}")
        _check(_power_of_two(self.reorder_depth),
               f"reorder_depth must be a power of two, not {self.reorder_depth!r}")
        if self.fetch_low_water is not None:
            check_low_water(self.fetch_low_water, self.reorder_depth)
        _check(isinstance(self.features, int) and not self.features & ~TRANSPORT_FEATURES
               and self.features >> Feature.VERSION_1 & 1,
               f"features {self.features!r} must be a subset of the transport features "
               f"{TRANSPORT_FEATURES:#x} that includes VERSION_1")
        check_config_mode(self.config, self.msix_vectors)
        tm = self.transport_map
        _check(tm.msix_table_offset + 16 * max(self.msix_vectors, 1) <= tm.bar_size
               and tm.msix_pba_offset + 8 <= tm.bar_size,
               "the MSI-X Table and PBA do not fit BAR0")

    @property
    def seq_width(self) -> int:
        """Width of the engine's ``seq`` fields: what a backend is built with."""
        return exact_log2(self.reorder_depth) + 1

    @property
    def device_cfg_addr_width(self) -> int:
        """DW address width of the device configuration window a backend serves."""
        return next(w.addr_width for w in self.transport_map.windows() if w.name == "device")


class VirtioPciDevice(wiring.Component):
    """A virtio-pci (modern, virtio 1.2 §4.1) device: raw TLP streams in and out.

    Composition (``docs/virtio-transport.md``)::

        rx/tx ── PcieFunction ── regs.{common,isr,device,notify}, cfg_ext ── VirtioPciTransport
                     │  dma_req / dma_cpl                                   │ queue config, doorbells,
                 DmaEngine ── rd[0] ring_rd, rd[1] desc_rd, wr[0] ctl_wr ── VirtqueueEngine
                     │        rd[2..], wr[1..]                              │ elem / done
                     └──────────────────────────────────────────────────── backend (device_cfg)

    The engine's ``notify`` goes through the transport to MSI-X (``msix``) or the ISR and
    INTx. The offered features are ``params.features`` plus the backend's
    ``device_features``.

    Reset: ``rst`` or ``function_reset`` (a PCIe hot reset or link down, held as long as
    wanted) resets everything, the backend included. A virtio device reset (status 0) is
    the transport's: it drains the engine and the backend, then clears the registers.

    Parameters
    ----------
    params : VirtioPciDeviceParams
    backend : wiring.Component
        A device backend keeping the contract of :mod:`hdl.virtio.device_backend`, built
        with ``params.seq_width``, ``params.width`` and ``params.device_cfg_addr_width``.

    Attributes
    ----------
    rx : In(raw_tlp_signature(width))
    tx : Out(raw_tlp_signature(width))
    credits : In(FcCreditLimit)
        Posted / non-posted credit limits for the DMA engine (see ``docs/dma.md``); a core
        whose transmit side enforces credits itself may tie every ``*_inf`` and ``valid``
        high.
    function_reset : In(1)
    core_control : In(FunctionControl)
        Only with ``config="external"``: the PCIe core's Command / Device Control / MSI-X
        state and captured ID (for the 7-series block, from
        :class:`~hdl.pcie.xilinx7.CfgStatus`), to the function's ``core_control``.
    device_status : Out(8)
    engine_error : Out(VirtqError)
        Why the engine asked for DEVICE_NEEDS_RESET (valid while that status bit is set).
    stats : Out(VirtqStats)
    dma_status : Out(DmaStatus)
    bar_counters : Out(BarCounters)
    transport_counters : Out(TransportCounters)
    """

    def __init__(self, params: VirtioPciDeviceParams, backend: wiring.Component):
        if not isinstance(params, VirtioPciDeviceParams):
            raise TypeError(f"params must be a VirtioPciDeviceParams, not {params!r}")
        check_backend(backend, seq_width=params.seq_width, width=params.width,
                      cfg_addr_width=params.device_cfg_addr_width)
        p = self.params = params
        self.backend = backend
        tm = p.transport_map
        self.pcie = PcieFunction(
            width=p.width, identity=p.identity, bar_size=tm.bar_size, bar_64bit=p.bar_64bit,
            windows=tm.windows(), msix_vectors=p.msix_vectors,
            msix_table_offset=tm.msix_table_offset, msix_pba_offset=tm.msix_pba_offset,
            vendor_caps=tm.vendor_caps(),
            max_payload_size_supported=p.max_payload_size_supported, link=p.link,
            max_read_dw=p.max_read_dw, config=p.config, user_config_base=p.user_config_base)
        self.offered_features = p.features | backend.device_features
        self.transport = VirtioPciTransport(
            num_queues=p.num_queues, max_queue_size=p.max_queue_size,
            msix_vectors=p.msix_vectors, device_features=self.offered_features,
            transport_map=tm,
            pci_cfg_offset=self.pcie.vendor_cap_offsets[PCI_CFG_CAP_INDEX])
        self.engine = VirtqueueEngine(
            num_queues=p.num_queues, max_queue_size=p.max_queue_size,
            reorder_depth=p.reorder_depth, data_width=p.width, max_batch=p.max_batch,
            max_block=p.max_block, max_chain_len=p.max_chain_len,
            max_used_batch=p.max_used_batch, fetch_low_water=p.fetch_low_water)
        self.dma = DmaEngine(
            read_channels=_ENGINE_READ_CHANNELS + backend.read_channels,
            write_channels=_ENGINE_WRITE_CHANNELS + backend.write_channels,
            width=p.width, tags=p.dma_tags, cpl_buffer_bytes=p.dma_cpl_buffer_bytes,
            read_slots=p.dma_read_slots, timeout=p.dma_timeout)
        members = {
            "rx": In(raw_tlp_signature(p.width)),
            "tx": Out(raw_tlp_signature(p.width)),
            "credits": In(FcCreditLimit),
            "function_reset": In(1),
            "device_status": Out(8),
            "engine_error": Out(VirtqError),
            "stats": Out(VirtqStats),
            "dma_status": Out(DmaStatus),
            "bar_counters": Out(BarCounters),
            "transport_counters": Out(TransportCounters),
        }
        if p.config == "external":
            members["core_control"] = In(FunctionControl)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        reset = ResetInserter(self.function_reset)
        m.submodules.function = function = self.pcie
        m.submodules.dma = dma = reset(self.dma)
        m.submodules.transport = transport = reset(self.transport)
        m.submodules.engine = engine = reset(self.engine)
        m.submodules.backend = backend = reset(self.backend)

        # Link side.
        wiring.connect(m, wiring.flipped(self.rx), function.rx)
        wiring.connect(m, function.tx, wiring.flipped(self.tx))
        m.d.comb += function.function_reset.eq(self.function_reset)
        if self.params.config == "external":
            m.d.comb += function.core_control.eq(self.core_control)

        # DMA engine <-> function. Requests pass a small FIFO: its valid and ready are
        # registered, so the function's transmit arbitration and the DMA engine's choice of
        # request are not one combinational path (they were on the ECP5).
        m.submodules.dma_req_queue = reset(queue_stream(m, dma.req, function.dma_req,
                                                        depth=4))
        wiring.connect(m, function.dma_cpl, dma.cpl)
        m.d.comb += [
            dma.ctrl.eq(function.control),
            dma.credits.eq(self.credits),
        ]
        if self.params.config == "internal":
            m.d.comb += function.dma_pending.eq(dma.pending)

        # Transport <-> function.
        wiring.connect(m, function.regs, transport.regs)
        wiring.connect(m, function.cfg_ext, transport.cfg_ext)
        m.d.comb += transport.msix_enable.eq(function.control.msix_enable)
        if self.params.config == "internal":
            m.d.comb += function.intx.eq(transport.intx)
        if self.params.msix_vectors:
            wiring.connect(m, transport.msix, function.msix)

        # Transport <-> engine and backend.
        m.d.comb += [
            engine.queue_config.eq(transport.queue_config),
            engine.features.eq(transport.features),
            engine.driver_ok.eq(transport.driver_ok),
            engine.reset.eq(transport.engine_reset),
            backend.reset.eq(transport.backend_reset),
            backend.features.eq(transport.driver_features),
            transport.idle.eq(engine.idle & backend.idle),
            transport.needs_reset.eq(engine.needs_reset | backend.needs_reset),
            transport.config_changed.eq(backend.config_changed),
        ]
        wiring.connect(m, transport.doorbell, engine.doorbell)
        wiring.connect(m, engine.notify, transport.notify)
        wiring.connect(m, transport.device_cfg, backend.cfg)

        # Engine <-> backend, and everyone's DMA channels.
        wiring.connect(m, engine.elem, backend.elem)
        wiring.connect(m, backend.done, engine.done)
        wiring.connect(m, engine.ring_rd, dma.rd[0])
        wiring.connect(m, engine.desc_rd, dma.rd[1])
        wiring.connect(m, engine.ctl_wr, dma.wr[0])
        for i in range(self.backend.read_channels):
            wiring.connect(m, backend.rd[i], dma.rd[_ENGINE_READ_CHANNELS + i])
        for j in range(self.backend.write_channels):
            wiring.connect(m, backend.wr[j], dma.wr[_ENGINE_WRITE_CHANNELS + j])

        # Observability.
        m.d.comb += [
            self.device_status.eq(transport.device_status),
            self.engine_error.eq(engine.error),
            self.stats.eq(engine.stats),
            self.dma_status.eq(dma.status),
            self.bar_counters.eq(function.counters),
            self.transport_counters.eq(transport.counters),
        ]
        return m
