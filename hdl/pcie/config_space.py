"""Type 0 configuration space of the endpoint function (PCIe Base 4.0 §7.5)."""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .config_target import ConfigTarget
from .params import FunctionIdentity, LinkParams, VendorCapability, place_capabilities
from .register_bus import RegisterBus
from .spec import (MSIX_MAX_VECTORS, CapId, Cfg, FunctionControl, MsixCap, PcieCap, PmCap,
                   check_tlp_width, tlp_signature)

__all__ = ["ConfigSpace", "ConfigEvents"]

ConfigEvents = data.StructLayout({
    "ur_detected": 1,       # the function received an Unsupported Request
    "ca_sent": 1,           # the function completed a request with Completer Abort
    "poisoned": 1,          # a poisoned TLP was received
    "cpl_poisoned": 1,      # a poisoned completion was received
    "cpl_ur": 1,            # a completion with UR status was received
    "cpl_ca": 1,            # a completion with CA status was received
})
"""One-cycle event pulses that the Status and Device Status registers log."""

# Command register bits that software can write (§7.5.1.1.3). I/O Space stays 0: the
# function has no I/O BAR. Special Cycles, MWI, VGA snoop, IDSEL stepping and fast
# back-to-back are hardwired to 0 for PCI Express.
_CMD_WMASK = (Cfg.CMD_MEMORY_SPACE | Cfg.CMD_BUS_MASTER | Cfg.CMD_PARITY_ERROR_RESPONSE
              | Cfg.CMD_SERR_ENABLE | Cfg.CMD_INTERRUPT_DISABLE)

# Device Control (§7.5.3.4): error reporting enables [3:0], Relaxed Ordering [4], MPS [7:5],
# Extended Tag [8] (only if supported), No Snoop [11], MRRS [14:12]. Phantom Functions, Aux
# Power PM and Initiate FLR are not supported and read 0.
_DEVCTL_WMASK = 0x000F | 0x0010 | 0x00E0 | 0x0800 | 0x7000
_DEVCTL_INIT = (1 << 4) | (1 << 11) | (2 << PcieCap.DEV_CTL_MRRS_SHIFT)   # spec defaults

# Link Control (§7.5.3.7) for an endpoint: ASPM Control [1:0], RCB [3], Common Clock
# Configuration [6], Extended Synch [7]. The rest is reserved for endpoints or unsupported.
_LINKCTL_WMASK = 0x0003 | 0x0008 | 0x0040 | 0x0080


class ConfigSpace(wiring.Component):
    """Answers CfgRd0/CfgWr0 requests from the function's configuration registers.

    The space as built (offsets are attributes, see ``docs/pcie-function.md``):

    * Type 0 header (§7.5.1): IDs and class from ``identity``; Command (Memory Space, Bus
      Master, Parity Error Response, SERR# Enable, Interrupt Disable writable); Status with
      Interrupt Status, Capabilities List and the RW1C error bits Master Data Parity Error,
      Signaled/Received Target Abort, Received Master Abort, Detected Parity Error; Cache
      Line Size (RW, no effect); BAR0 a non-prefetchable memory BAR of ``bar_size`` bytes,
      32-bit or 64-bit (then BAR1 holds the upper half); other BARs, Cardbus CIS and
      Expansion ROM read 0; Interrupt Line (RW), Interrupt Pin 01h (INTA).
    * Capabilities at 40h: Power Management (D0 and D3hot, No_Soft_Reset, no PME), PCI
      Express (v2, endpoint), MSI-X (if ``msix_vectors``), then ``vendor_caps`` in order.
    * Extended space (100h-FFFh) reads 0: no extended capabilities (§7.6.1).

    Unimplemented registers read 0 and ignore writes; every request to function 0 completes
    successfully (CplD for reads with the whole DW, Cpl for writes, Byte Count 4, completer
    ID = the request's target ID). Requests to other function numbers get UR. Every CfgWr0
    captures the Bus and Device Number (§2.2.6.2) for ``control.requester_id``.

    Reset: every register returns to its default (BARs 0, Command 0, D0, Device Control
    defaults, MSI-X disabled and unmasked, captured ID 0).

    Parameters
    ----------
    identity : FunctionIdentity
    bar_size : int
        BAR0 size in bytes, a power of two from 128 B to 2 GiB.
    bar_64bit : bool
    msix_vectors : int
        MSI-X Table Size, 0 for no MSI-X capability.
    msix_table_offset, msix_pba_offset : int
        Offsets of Table and PBA in BAR0 (8-byte aligned).
    vendor_caps : sequence of VendorCapability
    max_payload_size_supported : int
        Device Capabilities Max_Payload_Size Supported encoding (0 = 128 B .. 5 = 4096 B).
    ext_tag_supported : bool
        Device Capabilities Extended Tag Field Supported (8-bit tags).
    link : LinkParams
    width : int
        TLP stream width, 64 or 128.

    Attributes
    ----------
    rx : In(tlp_signature(width))
        CfgRd0 / CfgWr0 requests only.
    tx : Out(tlp_signature(width))
        Their completions.
    control : Out(FunctionControl)
        ``max_payload_size`` is clamped to Max_Payload_Size Supported and
        ``max_read_request_size`` to 4096 B, whatever software wrote.
    bar_base : Out(64)
        BAR0's programmed address (low bits zero).
    power_d0 : Out(1)
        PowerState is D0 (memory decoding is allowed only then, PCI PM 1.2 §5.4.1).
    cfg_ext : Out(RegisterBus.Signature(addr_width=6))
        Forwarded vendor-capability DWs; ``addr`` is the configuration DW index (0..63).
    interrupt_status : In(1)
    transactions_pending : In(1)
        Device Status Transactions Pending (the DMA engine has non-posted requests out).
    events : In(ConfigEvents)
    """

    def __init__(self, *, identity: FunctionIdentity = FunctionIdentity(), bar_size: int = 32768,
                 bar_64bit: bool = False, msix_vectors: int = 0, msix_table_offset: int = 0x4000,
                 msix_pba_offset: int = 0x5000, vendor_caps=(),
                 max_payload_size_supported: int = 1, ext_tag_supported: bool = True,
                 link: LinkParams = LinkParams(), width: int = 64):
        self.width = check_tlp_width(width)
        if not isinstance(identity, FunctionIdentity):
            raise TypeError(f"identity must be a FunctionIdentity, not {identity!r}")
        if not isinstance(link, LinkParams):
            raise TypeError(f"link must be a LinkParams, not {link!r}")
        if (not isinstance(bar_size, int) or bar_size & (bar_size - 1)
                or not 128 <= bar_size <= 1 << 31):
            raise ValueError(f"BAR0 size must be a power of two from 128 bytes to 2 GiB, "
                             f"not {bar_size!r}")
        if not isinstance(msix_vectors, int) or not 0 <= msix_vectors <= MSIX_MAX_VECTORS:
            raise ValueError(f"msix_vectors must be 0..{MSIX_MAX_VECTORS}, not {msix_vectors!r}")
        for name, off in (("msix_table_offset", msix_table_offset),
                          ("msix_pba_offset", msix_pba_offset)):
            if not isinstance(off, int) or off % 8 or not 0 <= off < bar_size:
                raise ValueError(f"{name} {off!r} must be 8-byte aligned inside BAR0 (§7.7.2)")
        if max_payload_size_supported not in range(6):
            raise ValueError(f"max_payload_size_supported must be 0..5 (128 << n bytes), "
                             f"not {max_payload_size_supported!r}")
        vendor_caps = tuple(vendor_caps)
        for cap in vendor_caps:
            if not isinstance(cap, VendorCapability):
                raise TypeError(f"vendor_caps must hold VendorCapability objects, not {cap!r}")

        self.identity = identity
        self.bar_size = bar_size
        self.bar_64bit = bool(bar_64bit)
        self.msix_vectors = msix_vectors
        self.msix_table_offset = msix_table_offset
        self.msix_pba_offset = msix_pba_offset
        self.vendor_caps = vendor_caps
        self.max_payload_size_supported = max_payload_size_supported
        self.ext_tag_supported = bool(ext_tag_supported)
        self.link = link

        # Capability placement: in list order from 40h, each DW aligned.
        sizes = [(CapId.PM, PmCap.SIZE), (CapId.PCIE, PcieCap.SIZE)]
        if msix_vectors:
            sizes.append((CapId.MSIX, MsixCap.SIZE))
        sizes += [(CapId.VENDOR, cap.size) for cap in vendor_caps]
        offsets = place_capabilities([size for _, size in sizes], start=0x40)
        self.capabilities: list[tuple[int, int]] = [
            (cap_id, offset) for (cap_id, _), offset in zip(sizes, offsets)]
        self.pm_offset = self.capabilities[0][1]
        self.pcie_offset = self.capabilities[1][1]
        self.msix_offset = self.capabilities[2][1] if msix_vectors else None
        self.vendor_cap_offsets = [off for cid, off in self.capabilities[2 + bool(msix_vectors):]]
        self.forwarded_dws = sorted(
            (off + b) // 4 for cap, off in zip(vendor_caps, self.vendor_cap_offsets)
            for b in cap.forward[::4])

        super().__init__({
            "rx": In(tlp_signature(width)),
            "tx": Out(tlp_signature(width)),
            "control": Out(FunctionControl),
            "bar_base": Out(64),
            "power_d0": Out(1),
            "cfg_ext": Out(RegisterBus.Signature(addr_width=6)),
            "interrupt_status": In(1),
            "transactions_pending": In(1),
            "events": In(ConfigEvents),
        })

    def constant_dws(self) -> dict[int, int]:
        """Read-only DWs whose value never changes, by DW index (for the read mux)."""
        ident = self.identity
        dws = {
            Cfg.VENDOR_ID // 4: ident.vendor_id | ident.device_id << 16,
            Cfg.REVISION_ID // 4: ident.revision_id | ident.class_code << 8,
            Cfg.SUBSYSTEM_VENDOR_ID // 4: ident.subsystem_vendor_id | ident.subsystem_id << 16,
            Cfg.CAP_PTR // 4: self.capabilities[0][1],
        }
        nexts = [off for _, off in self.capabilities[1:]] + [0]

        def header(cap_id, next_ptr, upper16=0):
            return cap_id | next_ptr << 8 | upper16 << 16

        pm, pcie = self.pm_offset // 4, self.pcie_offset // 4
        dws[pm] = header(CapId.PM, nexts[0], PmCap.PMC_VERSION)
        link = self.link
        dws[pcie] = header(CapId.PCIE, nexts[1], PcieCap.CAP_VERSION | PcieCap.TYPE_ENDPOINT << 4)
        dws[pcie + PcieCap.DEV_CAP // 4] = (
            self.max_payload_size_supported
            | (PcieCap.DEV_CAP_EXT_TAG if self.ext_tag_supported else 0)
            | PcieCap.DEV_CAP_ROLE_BASED_ERR)
        dws[pcie + PcieCap.LINK_CAP // 4] = (link.speed | link.width << 4
                                            | PcieCap.LINK_CAP_ASPM_OPTIONALITY)
        dws[pcie + PcieCap.LINK_CAP2 // 4] = ((1 << link.speed) - 1) << 1
        if self.msix_vectors:
            msix = self.msix_offset // 4
            dws[msix] = header(CapId.MSIX, nexts[2], self.msix_vectors - 1)
            dws[msix + MsixCap.TABLE // 4] = self.msix_table_offset      # BIR 0
            dws[msix + MsixCap.PBA // 4] = self.msix_pba_offset
        for cap, off in zip(self.vendor_caps, self.vendor_cap_offsets):
            next_ptr = nexts[self.capabilities.index((CapId.VENDOR, off))]
            raw = cap.image(next_ptr)
            for k in range(0, cap.size, 4):
                if k in cap.forward:
                    continue
                dws[(off + k) // 4] = int.from_bytes(raw[k:k + 4], "little")
        return dws

    def elaborate(self, platform):
        m = Module()
        rx, tx = self.rx, self.tx
        ctl = self.control
        pcie = self.pcie_offset // 4
        pm = self.pm_offset // 4
        link = self.link

        # --- Requests: the transaction is ConfigTarget's, the registers are here ----------
        m.submodules.target = target = ConfigTarget(width=self.width,
                                                    forwarded=self.forwarded_dws)
        wiring.connect(m, wiring.flipped(rx), target.rx)
        wiring.connect(m, target.tx, wiring.flipped(tx))
        wiring.connect(m, target.cfg_ext, wiring.flipped(self.cfg_ext))
        req_hdr = target.request
        wdata = target.write_data
        reg = req_hdr.cfg_reg
        be = req_hdr.first_be
        bemask = Cat(*(Cat(*[be[i]] * 8) for i in range(4)))
        do_write = target.local_write
        cfg_ur = target.unsupported
        # The completer ID is the ID the request was addressed to.
        m.d.comb += target.completer_id.eq(Cat(req_hdr.cfg_function, req_hdr.cfg_device,
                                               req_hdr.cfg_bus))

        # --- Registers --------------------------------------------------------------------
        regs = {}

        def rw(dw_index, wmask, init=0, name=None):
            sig = Signal(32, init=init, name=name)
            regs[dw_index] = (sig, wmask)
            with m.If(do_write & (reg == dw_index)):
                m.d.sync += sig.eq((sig & ~(bemask & wmask)) | (wdata & bemask & wmask))
            return sig

        command = rw(Cfg.COMMAND // 4, _CMD_WMASK, name="command")
        rw(Cfg.CACHE_LINE_SIZE // 4, 0xFF, name="cache_line_size")
        bar_bits = ceil_log2(self.bar_size)
        bar0_wmask = 0xFFFF_FFFF & ~((1 << bar_bits) - 1)
        bar0 = rw(Cfg.BAR0 // 4, bar0_wmask, name="bar0")
        bar1 = rw(Cfg.BAR0 // 4 + 1, 0xFFFF_FFFF, name="bar1") if self.bar_64bit else Const(0, 32)
        int_line = rw(Cfg.INTERRUPT_LINE // 4, 0xFF, name="interrupt_line")
        devctl_wmask = _DEVCTL_WMASK | (PcieCap.DEV_CTL_EXT_TAG if self.ext_tag_supported else 0)
        devctl = rw(pcie + PcieCap.DEV_CTL // 4, devctl_wmask, _DEVCTL_INIT, name="devctl")
        linkctl = rw(pcie + PcieCap.LINK_CTL // 4, _LINKCTL_WMASK, name="linkctl")
        linkctl2 = rw(pcie + PcieCap.LINK_CTL2 // 4, 0xF, link.speed, name="linkctl2")
        if self.msix_vectors:
            msix = self.msix_offset // 4
            msix_ctrl = rw(msix, (MsixCap.CTRL_ENABLE | MsixCap.CTRL_FUNCTION_MASK) << 16,
                           name="msix_ctrl")
        else:
            msix_ctrl = Const(0, 32)

        power_state = Signal(2)
        with m.If(do_write & (reg == pm + PmCap.PMCSR // 4) & be[0]):
            # D1 and D2 are not supported: writing them changes nothing (PCI PM 1.2 §3.2.4).
            with m.If((wdata[0:2] == PmCap.PMCSR_D0) | (wdata[0:2] == PmCap.PMCSR_D3HOT)):
                m.d.sync += power_state.eq(wdata[0:2])

        # RW1C error bits of Status (§7.5.1.1.4) and Device Status (§7.5.3.5).
        sts_mdpe, sts_sta, sts_rta, sts_rma, sts_dpe, urd = (
            Signal(name=n) for n in ("sts_mdpe", "sts_sta", "sts_rta", "sts_rma", "sts_dpe",
                                     "devsta_urd"))
        rw1c = [(Cfg.COMMAND // 4, 24, sts_mdpe), (Cfg.COMMAND // 4, 27, sts_sta),
                (Cfg.COMMAND // 4, 28, sts_rta), (Cfg.COMMAND // 4, 29, sts_rma),
                (Cfg.COMMAND // 4, 31, sts_dpe), (pcie + PcieCap.DEV_CTL // 4, 19, urd)]
        for dw_index, bit, sig in rw1c:
            with m.If(do_write & (reg == dw_index) & be[bit // 8] & wdata[bit]):
                m.d.sync += sig.eq(0)
        # Events come after the clears: a bit set and cleared in the same cycle stays set.
        ev = self.events
        per = command[6]
        with m.If(ev.cpl_poisoned & per):
            m.d.sync += sts_mdpe.eq(1)
        with m.If(ev.ca_sent):
            m.d.sync += sts_sta.eq(1)
        with m.If(ev.cpl_ca):
            m.d.sync += sts_rta.eq(1)
        with m.If(ev.cpl_ur):
            m.d.sync += sts_rma.eq(1)
        with m.If(ev.poisoned):
            m.d.sync += sts_dpe.eq(1)
        with m.If(ev.ur_detected | cfg_ur):
            m.d.sync += urd.eq(1)

        # --- Read values ------------------------------------------------------------------
        constants = self.constant_dws()
        values = {k: Const(v, 32) for k, v in constants.items()}
        for dw_index, (sig, wmask) in regs.items():
            values[dw_index] = (sig & wmask) | constants.get(dw_index, 0)
        values[Cfg.COMMAND // 4] = Cat(
            (command & _CMD_WMASK)[0:16],
            Const(0, 3), self.interrupt_status, Const(1, 1),     # bits 19 (INTx), 20 (caps)
            Const(0, 3), sts_mdpe, Const(0, 2), sts_sta, sts_rta, sts_rma, Const(0, 1), sts_dpe)
        values[Cfg.BAR0 // 4] = (bar0 & bar0_wmask) | (0b100 if self.bar_64bit else 0)
        values[Cfg.INTERRUPT_LINE // 4] = (int_line & 0xFF) | (0x01 << 8)   # INTA
        values[pm + PmCap.PMCSR // 4] = Cat(power_state, Const(0, 1), Const(1, 1))
        values[pcie + PcieCap.DEV_CTL // 4] = (devctl & devctl_wmask) | Cat(
            Const(0, 19), urd, Const(0, 1), self.transactions_pending)
        values[pcie + PcieCap.LINK_CTL // 4] = (linkctl & _LINKCTL_WMASK) | (
            (link.speed | link.width << 4 | (PcieCap.LINK_STA_SLOT_CLOCK if link.slot_clock
                                              else 0)) << 16)

        with m.Switch(reg):
            for dw_index, value in sorted(values.items()):
                with m.Case(dw_index):
                    m.d.comb += target.read_data.eq(value)

        # --- Outputs ----------------------------------------------------------------------
        m.d.comb += [
            ctl.memory_space_en.eq(command[1]),
            ctl.bus_master_en.eq(command[2]),
            ctl.interrupt_disable.eq(command[10]),
            ctl.ext_tag_en.eq(devctl[8] if self.ext_tag_supported else 0),
            ctl.msix_enable.eq(msix_ctrl[31]),
            ctl.msix_function_mask.eq(msix_ctrl[30]),
            self.bar_base.eq(Cat((bar0 & bar0_wmask), bar1)),
            self.power_d0.eq(power_state == PmCap.PMCSR_D0),
        ]
        mps = devctl[5:8]
        mrrs = devctl[12:15]
        m.d.comb += [
            ctl.max_payload_size.eq(Mux(mps > self.max_payload_size_supported,
                                        self.max_payload_size_supported, mps)),
            ctl.max_read_request_size.eq(Mux(mrrs > 5, 5, mrrs)),
        ]
        requester_id = Signal(16)
        m.d.comb += ctl.requester_id.eq(requester_id)
        with m.If(target.accepted_write):
            m.d.sync += requester_id.eq(Cat(Const(0, 3), req_hdr.cfg_device, req_hdr.cfg_bus))
        return m
