"""The PCIe endpoint function: everything between a PCIe core's TLP streams and the device."""
from __future__ import annotations

from amaranth.hdl import Module, ResetInserter, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .bar_completer import BarCompleter, BarCounters
from .config_space import ConfigSpace
from .intx_controller import IntxController
from .msix_table import MsixTable
from .params import FunctionIdentity, LinkParams
from .register_bus import RegisterBus, RegisterBusStage, RegisterWindow
from .rx_router import RxRouter
from .spec import CapId, FunctionControl, check_tlp_width, raw_tlp_signature, tlp_signature
from .tlp_arbiter import TlpArbiter
from .tlp_depacketizer import TlpDepacketizer
from .tlp_packetizer import TlpPacketizer
from .user_config_space import USER_CFG_BASE, UserConfigSpace

__all__ = ["PcieFunction", "CONFIG_MODES", "check_config_mode"]

_RESERVED_WINDOW_NAMES = ("msix_table", "msix_pba")

CONFIG_MODES = ("internal", "external")
"""Who owns the configuration space: the function (``internal``) or the PCIe core
(``external``, see :class:`PcieFunction`)."""


def check_config_mode(config: str, msix_vectors: int) -> None:
    """Raise ``ValueError`` unless ``config`` is one of :data:`CONFIG_MODES` and, when it is
    ``"external"``, MSI-X is present (``msix_vectors`` > 0)."""
    if config not in CONFIG_MODES:
        raise ValueError(f"config must be one of {CONFIG_MODES}, not {config!r}")
    if config == "external" and not msix_vectors:
        raise ValueError("an external configuration space needs MSI-X (msix_vectors > 0): "
                         "the PCIe core's legacy interrupt is a sideband, and this "
                         "function sends no Assert_INTx messages in that mode")


class PcieFunction(wiring.Component):
    """A single-function PCIe endpoint with configuration space, BAR0, MSI-X and INTx.

    Receive path: ``rx`` -> depacketizer -> router: CfgRd0/CfgWr0 to the configuration
    space, completions to ``dma_cpl``, all other requests to the BAR completer, which serves
    BAR0 through register windows (the MSI-X Table and PBA inside, the transport's windows on
    ``regs``) and answers or drops the rest. Transmit path: configuration completions, BAR
    completions, MSI-X writes, INTx messages and ``dma_req`` are merged round robin, whole
    TLPs at a time, then packetized onto ``tx``. See ``docs/pcie-function.md``.

    External configuration (``config="external"``), for a PCIe core that owns the
    configuration space (the Xilinx 7-series integrated block): the core holds the header,
    the BARs, Power Management, PCI Express and MSI-X capabilities and shows their state;
    ``control`` then repeats the ``core_control`` input. Configuration requests that reach
    the function are those of the core's user-defined range: a
    :class:`~hdl.pcie.user_config_space.UserConfigSpace` answers them with the vendor
    capabilities from ``user_config_base`` (forwarded DWs on ``cfg_ext`` as usual, other
    DWs read 0, writes ignored, completer ID ``core_control.requester_id``). The core passes on
    only memory requests that hit one of its BARs, and this function has BAR0 alone (BAR0
    and BAR1 when 64-bit), so every memory request is a BAR0 hit at offset ``address %
    bar_size``, served while ``core_control.memory_space_en``. MSI-X is required (the core's
    legacy interrupt is a sideband signal, not Assert_INTx messages): the INTx controller
    is left out and so are the ``intx`` and ``dma_pending`` ports. The MSI-X Table and PBA
    stay in BAR0 at ``msix_table_offset`` / ``msix_pba_offset``, where the core's MSI-X
    capability must point; MSI-X Enable and Function Mask come from ``core_control``.

    Reset: ``rst`` of the clock domain or ``function_reset`` (synchronous, active high, for
    as long as wanted) returns every register and state machine of the function to its
    default: configuration space (BARs, Command, Device Control, MSI-X control, captured
    ID), MSI-X Table (cleared over ``msix_vectors`` clocks after reset), Mask and Pending
    Bits, INTx state, counters. A TLP being transferred on ``tx`` or ``dma_cpl`` when reset
    hits is cut short; its receiver sees a new ``first`` beat next. Reset the DMA engine and
    the transport's register clients with the same signal.

    Parameters
    ----------
    width : int
        TLP stream width, 64 (default) or 128.
    identity : FunctionIdentity
    bar_size : int
        BAR0 size in bytes (default 32 KiB).
    bar_64bit : bool
        BAR0 as a 64-bit BAR (uses BAR1 for the upper half); default 32-bit.
    windows : sequence of RegisterWindow
        The transport's windows of BAR0; each becomes a register bus master port on ``regs``
        named after it, behind a :class:`~hdl.pcie.register_bus.RegisterBusStage`.
        ``msix_table`` and ``msix_pba`` are reserved.
    msix_vectors : int
        MSI-X Table Size (1..64), or 0 to leave MSI-X out entirely (INTx-only build).
    msix_table_offset, msix_pba_offset : int
        Where the MSI-X Table and PBA sit in BAR0.
    vendor_caps : sequence of VendorCapability
        Vendor-specific capabilities (the virtio transport's), in list order after MSI-X.
    max_payload_size_supported : int
        Device Capabilities MPS Supported encoding, 0..5 (default 1: 256 bytes).
    ext_tag_supported : bool
        Whether 8-bit tags can be enabled (default True).
    link : LinkParams
        Link speed/width reported in Link Capabilities and Link Status (per board).
    max_read_dw : int
        Longest BAR0 read served (1..32 DW, default 16); longer reads get Completer Abort.
    config : str
        ``"internal"`` (default): the function's own configuration space. ``"external"``:
        the PCIe core's (see above); ``identity``, ``max_payload_size_supported``,
        ``ext_tag_supported`` and ``link`` are then the core's settings, not used here.
    user_config_base : int
        External mode: where the vendor capabilities start (default A8h, the 7-series
        block's user-defined range); the core's last capability must point there.

    Attributes
    ----------
    rx : In(raw_tlp_signature(width))
        TLPs from the link (a PCIe core's receive side).
    tx : Out(raw_tlp_signature(width))
        TLPs to the link.
    dma_req : In(tlp_signature(width))
        Decoded requests from the DMA engine (MemRd/MemWr with the requester ID of
        ``control``); merged with the function's own TLPs.
    dma_cpl : Out(tlp_signature(width))
        Every received completion (Cpl, CplD, CplLk, CplDLk), decoded, for the DMA engine.
        Back-pressure here stalls the whole receive path.
    regs : Out(Signature({name: Out(RegisterBus.Signature(...))}))
        One register bus master per transport window.
    cfg_ext : Out(RegisterBus.Signature(addr_width=6))
        Configuration accesses to the ``forward`` DWs of vendor capabilities.
    msix : In(stream.Signature(unsigned(vector_width)))
        MSI-X vector requests (present only when ``msix_vectors`` > 0).
    intx : In(1)
        Interrupt level for INTx (used while MSI-X is not enabled); internal mode only.
    control : Out(FunctionControl)
        The function's Command / Device Control / MSI-X state and captured ID.
    core_control : In(FunctionControl)
        External mode only: the same, from the PCIe core. (Not named ``function``: in
        :class:`~hdl.virtio.virtio_pci_device.VirtioPciDevice` this component is the
        ``function`` submodule, and Amaranth names the parent's input after this port, so
        the two would clash and the instance would come out as ``function$N``.)
    dma_pending : In(1)
        The DMA engine has non-posted requests outstanding (Device Status bit 5); internal
        mode only (the core keeps Device Status).
    function_reset : In(1)
    counters : Out(BarCounters)
    """

    def __init__(self, *, width: int = 64, identity: FunctionIdentity = FunctionIdentity(),
                 bar_size: int = 32768, bar_64bit: bool = False, windows=(),
                 msix_vectors: int = 8, msix_table_offset: int = 0x4000,
                 msix_pba_offset: int = 0x5000, vendor_caps=(),
                 max_payload_size_supported: int = 1, ext_tag_supported: bool = True,
                 link: LinkParams = LinkParams(), max_read_dw: int = 16,
                 config: str = "internal", user_config_base: int = USER_CFG_BASE):
        self.width = check_tlp_width(width)
        check_config_mode(config, msix_vectors)
        self.external = config == "external"
        self.transport_windows = list(windows)
        for w in self.transport_windows:
            if not isinstance(w, RegisterWindow):
                raise TypeError(f"windows must be RegisterWindow objects, not {w!r}")
            if w.name in _RESERVED_WINDOW_NAMES:
                raise ValueError(f"register window name {w.name!r} is reserved for MSI-X")
        self.msix_vectors = msix_vectors
        if self.external:
            self.config = UserConfigSpace(vendor_caps=vendor_caps, base=user_config_base,
                                          width=width)
        else:
            self.config = ConfigSpace(
                identity=identity, bar_size=bar_size, bar_64bit=bar_64bit,
                msix_vectors=msix_vectors, msix_table_offset=msix_table_offset,
                msix_pba_offset=msix_pba_offset, vendor_caps=vendor_caps,
                max_payload_size_supported=max_payload_size_supported,
                ext_tag_supported=ext_tag_supported, link=link, width=width)
        bar_windows = list(self.transport_windows)
        self.msix_table = None
        if msix_vectors:
            self.msix_table = MsixTable(vectors=msix_vectors, width=width)
            bar_windows += [
                RegisterWindow("msix_table", msix_table_offset, self.msix_table.table_window_size),
                RegisterWindow("msix_pba", msix_pba_offset, self.msix_table.pba_window_size),
            ]
        self.bar_windows = bar_windows
        self.bar = BarCompleter(windows=bar_windows, bar_size=bar_size, bar_64bit=bar_64bit,
                                max_read_dw=max_read_dw, decode_bar=not self.external,
                                width=width)

        members = {
            "rx": In(raw_tlp_signature(width)),
            "tx": Out(raw_tlp_signature(width)),
            "dma_req": In(tlp_signature(width)),
            "dma_cpl": Out(tlp_signature(width)),
            "regs": Out(wiring.Signature({
                w.name: Out(RegisterBus.Signature(addr_width=w.addr_width))
                for w in self.transport_windows})),
            "cfg_ext": Out(RegisterBus.Signature(addr_width=6)),
            "control": Out(FunctionControl),
            "function_reset": In(1),
            "counters": Out(BarCounters),
        }
        if self.external:
            members["core_control"] = In(FunctionControl)
        else:
            members["intx"] = In(1)
            members["dma_pending"] = In(1)
        if msix_vectors:
            self.vector_width = self.msix_table.vector_width
            members["msix"] = In(stream.Signature(unsigned(self.vector_width)))
        super().__init__(members)

    # Where things ended up, for the transport and the tests.
    @property
    def capabilities(self) -> list[tuple[int, int]]:
        """``(capability ID, offset)`` in list order (in external mode only the vendor
        capabilities: the core places the others)."""
        if self.external:
            return [(CapId.VENDOR, off) for off in self.config.vendor_cap_offsets]
        return list(self.config.capabilities)

    @property
    def vendor_cap_offsets(self) -> list[int]:
        return list(self.config.vendor_cap_offsets)

    def elaborate(self, platform):
        m = Module()
        width = self.width
        reset = ResetInserter(self.function_reset)

        m.submodules.depacketizer = reset(dpkt := TlpDepacketizer(width=width))
        m.submodules.router = reset(router := RxRouter(width=width))
        m.submodules.config = reset(cfg := self.config)
        m.submodules.bar = reset(bar := self.bar)
        sources = [cfg.tx, bar.tx]
        if not self.external:
            m.submodules.intx = reset(intx := IntxController(width=width))
            sources.append(intx.tx)
        if self.msix_table is not None:
            m.submodules.msix = reset(msix := self.msix_table)
            sources.append(msix.tx)
        m.submodules.arbiter = reset(arb := TlpArbiter(n=len(sources) + 1, width=width))
        m.submodules.packetizer = reset(pkt := TlpPacketizer(width=width))

        # Receive path.
        wiring.connect(m, wiring.flipped(self.rx), dpkt.raw)
        wiring.connect(m, dpkt.tlp, router.i)
        wiring.connect(m, router.cfg, cfg.rx)
        wiring.connect(m, router.req, bar.rx)
        wiring.connect(m, router.cpl, wiring.flipped(self.dma_cpl))

        # Transmit path.
        for k, src in enumerate(sources):
            wiring.connect(m, src, arb.i[k])
        wiring.connect(m, wiring.flipped(self.dma_req), arb.i[len(sources)])
        wiring.connect(m, arb.o, pkt.tlp)
        wiring.connect(m, pkt.raw, wiring.flipped(self.tx))

        # Configuration space <-> the rest.
        wiring.connect(m, cfg.cfg_ext, wiring.flipped(self.cfg_ext))
        m.d.comb += [
            bar.completer_id.eq(self.control.requester_id),
            self.counters.eq(bar.counters),
        ]
        if self.external:
            ctl = self.core_control
            m.d.comb += [
                self.control.eq(ctl),
                cfg.completer_id.eq(ctl.requester_id),
                bar.memory_enable.eq(ctl.memory_space_en),
            ]
        else:
            ctl = cfg.control
            m.d.comb += [
                self.control.eq(ctl),
                bar.memory_enable.eq(ctl.memory_space_en & cfg.power_d0),
                bar.bar_base.eq(cfg.bar_base),
                cfg.events.ur_detected.eq(bar.events.ur),
                cfg.events.ca_sent.eq(bar.events.ca),
                cfg.events.poisoned.eq(router.events.poisoned),
                cfg.events.cpl_poisoned.eq(router.events.cpl_poisoned),
                cfg.events.cpl_ur.eq(router.events.cpl_ur),
                cfg.events.cpl_ca.eq(router.events.cpl_ca),
                cfg.transactions_pending.eq(self.dma_pending),
                cfg.interrupt_status.eq(intx.interrupt_status),
                intx.level.eq(self.intx),
                intx.msix_enable.eq(ctl.msix_enable),
                intx.interrupt_disable.eq(ctl.interrupt_disable),
                intx.requester_id.eq(ctl.requester_id),
            ]

        # BAR0 windows. The transport's go through a register slice: their clients decode
        # deeply (arbiters, then the common configuration registers) and the BAR completer's
        # bus signals come straight from the received TLP.
        for w in self.transport_windows:
            stage = m.submodules[f"{w.name}_stage"] = RegisterBusStage(addr_width=w.addr_width)
            wiring.connect(m, getattr(bar.windows, w.name), stage.master)
            wiring.connect(m, stage.client, wiring.flipped(getattr(self.regs, w.name)))
        if self.msix_table is not None:
            wiring.connect(m, bar.windows.msix_table, msix.table)
            wiring.connect(m, bar.windows.msix_pba, msix.pba)
            wiring.connect(m, wiring.flipped(self.msix), msix.request)
            m.d.comb += [
                msix.msix_enable.eq(ctl.msix_enable),
                msix.function_mask.eq(ctl.msix_function_mask),
                msix.bus_master_en.eq(ctl.bus_master_en),
                msix.requester_id.eq(ctl.requester_id),
            ]
        return m
