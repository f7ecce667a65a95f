"""The VIRTIO_PCI_CAP_PCI_CFG window: BAR0 accesses through configuration space
(virtio 1.2 §4.1.4.9)."""
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.register_bus import RegisterBus, RegisterWindow

__all__ = ["PciCfgAccess"]


class PciCfgAccess(wiring.Component):
    """Serves the writable fields of the ``VIRTIO_PCI_CAP_PCI_CFG`` capability and performs
    the BAR accesses its ``pci_cfg_data`` field stands for.

    ``struct virtio_pci_cfg_cap`` (§4.1.4.9) at configuration offset ``cap_offset``: the
    configuration space forwards its DWs 1..4 here (``cfg``, addressed by configuration DW
    index). ``cap.bar`` (byte 4) is read-write (8 bits); ``cap.id`` and ``padding`` (bytes
    5..7) read 0; ``cap.offset`` (DW 2) and ``cap.length`` (DW 3) are read-write (32 bits),
    all 0 after reset.

    ``pci_cfg_data`` (DW 4):

    * a configuration **write** stores its enabled bytes, then writes the first
      ``cap.length`` bytes of the field to BAR ``cap.bar`` at ``cap.offset``;
    * a configuration **read** reads ``cap.length`` bytes of BAR ``cap.bar`` at
      ``cap.offset`` into the first bytes of the field (the bytes above cleared) and
      returns the field.

    The configuration request completes only after the BAR access, so a read returns what
    the register returned (SeaBIOS reads ``virtio_pci_common_cfg`` this way). A BAR access
    happens only when the driver kept the rules of §4.1.4.9.2: ``cap.bar`` is 0 (BAR0 holds
    every structure), ``cap.length`` is 1, 2 or 4, ``cap.offset`` is a multiple of it and
    lies in one of ``windows``. Otherwise the field is written or read back with no access,
    and the refusal is counted (``docs/robustness.md``). Accesses reach the windows' clients
    exactly like memory requests do, side effects included (an ISR read clears the ISR).

    Reset (``rst``, the function's reset): the fields return to 0. A virtio device reset
    does not touch them: they are configuration registers.

    Parameters
    ----------
    cap_offset : int
        Configuration-space byte offset of the capability (DW aligned).
    windows : sequence of RegisterWindow
        BAR0 windows reachable through ``pci_cfg_data`` (the virtio structures).

    Attributes
    ----------
    cfg : In(RegisterBus.Signature(addr_width=6))
        Forwarded configuration accesses (the function's ``cfg_ext``).
    bar : Out(Signature({name: Out(RegisterBus.Signature(...))}))
        One master per window.
    refused : Out(16)
        ``pci_cfg_data`` accesses refused (wrapping).
    """

    def __init__(self, *, cap_offset: int, windows):
        if not isinstance(cap_offset, int) or cap_offset % 4 or not 0x40 <= cap_offset <= 0xEC:
            raise ValueError(f"cap_offset must be a DW-aligned capability offset in 40h..ECh, "
                             f"not {cap_offset!r}")
        self.windows = list(windows)
        if not self.windows or not all(isinstance(w, RegisterWindow) for w in self.windows):
            raise TypeError(f"windows must be a non-empty sequence of RegisterWindow, not "
                            f"{windows!r}")
        self.cap_offset = cap_offset
        super().__init__({
            "cfg": In(RegisterBus.Signature(addr_width=6)),
            "bar": Out(wiring.Signature({
                w.name: Out(RegisterBus.Signature(addr_width=w.addr_width))
                for w in self.windows})),
            "refused": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        cap_dw = self.cap_offset // 4

        bar = Signal(8)
        offset = Signal(32)
        length = Signal(32)
        cfg_data = Signal(32)

        def merged(old):
            return Cat(*(Mux(cfg.be[k], cfg.w_data.word_select(k, 8), old.word_select(k, 8))
                         for k in range(4)))

        # The access cfg_data stands for, and whether the driver kept the rules.
        lane = offset[:2]
        aligned = Signal()
        m.d.comb += aligned.eq(
            ((length == 1))
            | ((length == 2) & ~offset[0])
            | ((length == 4) & (lane == 0)))
        hit = Signal(len(self.windows))
        for k, w in enumerate(self.windows):
            m.d.comb += hit[k].eq((offset >> (w.dw_bits + 2)) == (w.offset >> (w.dw_bits + 2)))
        allowed = Signal()
        m.d.comb += allowed.eq((bar == 0) & aligned & hit.any())
        byte_mask = Mux(length == 4, 0xF, Mux(length == 2, 0x3, 0x1))
        bar_be = Signal(4)
        m.d.comb += bar_be.eq(byte_mask << lane)
        mask32 = Cat(*(byte_mask[k].replicate(8) for k in range(4)))

        is_write = Signal()
        read_data = Signal(32)
        # The field's bytes in the lanes of cap.offset, and back (a 4-way choice each).
        bar_w_data = Signal(32)
        shifted_back = Signal(32)
        with m.Switch(lane):
            for k in range(4):
                with m.Case(k):
                    m.d.comb += [bar_w_data.eq(cfg_data << (8 * k)),
                                 shifted_back.eq(read_data >> (8 * k))]
        for k, w in enumerate(self.windows):
            bus = getattr(self.bar, w.name)
            m.d.comb += [
                bus.addr.eq(offset[2:2 + w.addr_width]),
                bus.write.eq(is_write),
                bus.be.eq(bar_be),
                bus.w_data.eq(bar_w_data),
            ]
            with m.If(hit[k]):
                m.d.comb += read_data.eq(bus.r_data)

        with m.Switch(cfg.addr):
            with m.Case(cap_dw + 1):
                m.d.comb += cfg.r_data.eq(bar)
            with m.Case(cap_dw + 2):
                m.d.comb += cfg.r_data.eq(offset)
            with m.Case(cap_dw + 3):
                m.d.comb += cfg.r_data.eq(length)
            with m.Case(cap_dw + 4):
                m.d.comb += cfg.r_data.eq(cfg_data)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(cfg.valid):
                    with m.If(cfg.addr == cap_dw + 4):
                        with m.If(cfg.write):
                            m.d.sync += cfg_data.eq(merged(cfg_data))
                        m.d.sync += is_write.eq(cfg.write)
                        with m.If(allowed):
                            m.next = "ACCESS"
                        with m.Else():
                            m.d.sync += self.refused.eq(self.refused + 1)
                            m.next = "DONE"
                    with m.Else():
                        m.d.comb += cfg.ack.eq(1)
                        with m.If(cfg.write):
                            with m.Switch(cfg.addr):
                                with m.Case(cap_dw + 1):
                                    with m.If(cfg.be[0]):
                                        m.d.sync += bar.eq(cfg.w_data[:8])
                                with m.Case(cap_dw + 2):
                                    m.d.sync += offset.eq(merged(offset))
                                with m.Case(cap_dw + 3):
                                    m.d.sync += length.eq(merged(length))
            with m.State("ACCESS"):
                for k, w in enumerate(self.windows):
                    bus = getattr(self.bar, w.name)
                    with m.If(hit[k]):
                        m.d.comb += bus.valid.eq(1)
                        with m.If(bus.ack):
                            with m.If(~is_write):
                                m.d.sync += cfg_data.eq(shifted_back & mask32)
                            m.next = "DONE"
            with m.State("DONE"):
                # The configuration space still presents the request: complete it now.
                m.d.comb += cfg.ack.eq(1)
                m.next = "IDLE"
        return m
