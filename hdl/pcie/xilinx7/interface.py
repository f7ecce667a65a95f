"""The user interface of the 7-series Integrated Block for PCI Express, as Amaranth shapes.

References are to Xilinx PG054, *7 Series FPGAs Integrated Block for PCI Express* (the
AXI4-Stream core, ``pcie_7x``), chapter "Designing with the Core", sections "Transmitting
Outbound Packets" and "Receiving Inbound Packets", and its port tables.

What the block puts on ``tdata`` (the same for both directions and both widths):

* DW ``i`` of a TLP sits in bits ``32*i+31 .. 32*i`` counted from where the TLP starts, lower
  DWs in lower bits: DW 0 of a TLP is ``tdata[31:0]`` of its first beat (or ``tdata[95:64]``
  when a 128-bit receive beat starts the TLP in its upper half);
* inside every DW, header *and* payload, the block keeps the byte order of the wire: the
  first byte of the DW is in bits 31:24 (PG054, "byte ordering": the interface is big-endian
  within each DW). For header DWs that is exactly the spec's bit numbering, which the raw TLP
  stream also uses (:mod:`hdl.pcie.spec`). For payload DWs the first byte on the wire is the
  one at the lowest address, which the raw TLP stream keeps in bits 7:0, so every payload DW
  is byte-reversed on its way through the adapters (:func:`swap_payload_dws`).

``tkeep`` has one bit per byte and only ever marks whole DWs. At 64 bits a TLP always starts
in lane 0 and ends on ``tlast`` with ``tkeep`` ``0x0F`` or ``0xFF``. At 128 bits the receive
side ignores ``tlast``/``tkeep`` and marks packet bounds in ``tuser`` instead (``is_sof``,
``is_eof``, :data:`RxTuser`): a TLP may start in DW 0 or DW 2, and the end of one TLP and the
start of the next may share a beat ("straddling"). The transmit side has no straddling at any
width: a TLP starts in lane 0 and ends on ``tlast`` with ``tkeep`` ``0x000F``, ``0x00FF``,
``0x0FFF`` or ``0xFFFF``.
"""
from amaranth.hdl import Cat, Const, Mux, Value, unsigned
from amaranth.lib import data, stream

from ..spec import check_tlp_width

__all__ = ["SofEof", "RxTuser", "TxTuser", "axis_rx_layout", "axis_tx_layout",
           "axis_rx_signature", "axis_tx_signature", "swap_payload_dws", "byte_swap_dw"]


SofEof = data.StructLayout({
    # ``rx_is_sof[3:0]``: byte lane of the first byte of the TLP (0 or 8); ``rx_is_eof[3:0]``:
    # byte lane of the last byte of the TLP (3, 7, 11 or 15). Bits 3:2 are the DW lane.
    "byte": 4,
    # ``rx_is_sof[4]`` / ``rx_is_eof[4]``: a TLP starts / ends in this beat.
    "present": 1,
})
"""``rx_is_sof`` / ``rx_is_eof`` (PG054, ``m_axis_rx_tuser`` table; 128-bit interface only)."""

RxTuser = data.StructLayout({
    "ecrc_err": 1,      # tuser[0]:  rx_ecrc_err, ECRC check failed (only when the host enables it)
    "err_fwd": 1,       # tuser[1]:  rx_err_fwd, the TLP is poisoned (EP set)
    "bar_hit": 8,       # tuser[9:2]: rx_bar_hit, BAR0..BAR5, expansion ROM, reserved
    "is_sof": SofEof,   # tuser[14:10]
    "rsvd": 2,          # tuser[16:15]
    "is_eof": SofEof,   # tuser[21:17]
})
"""``m_axis_rx_tuser[21:0]`` (PG054, receive interface port table)."""

TxTuser = data.StructLayout({
    "ecrc_gen": 1,      # tuser[0]: tx_ecrc_gen, have the block append an ECRC
    "err_fwd": 1,       # tuser[1]: tx_err_fwd, have the block poison the TLP
    "str": 1,           # tuser[2]: tx_str, streamed (cut-through) transmission
    "src_dsc": 1,       # tuser[3]: tx_src_dsc, source discontinue (abort the TLP)
})
"""``s_axis_tx_tuser[3:0]`` (PG054, transmit interface port table)."""


def axis_rx_layout(width: int) -> data.StructLayout:
    """One ``m_axis_rx`` beat: ``tdata``, ``tkeep`` (per byte), ``tlast``, ``tuser``."""
    check_tlp_width(width)
    return data.StructLayout({
        "tdata": unsigned(width),
        "tkeep": unsigned(width // 8),
        "tlast": 1,
        "tuser": RxTuser,
    })


def axis_tx_layout(width: int) -> data.StructLayout:
    """One ``s_axis_tx`` beat: ``tdata``, ``tkeep`` (per byte), ``tlast``, ``tuser``."""
    check_tlp_width(width)
    return data.StructLayout({
        "tdata": unsigned(width),
        "tkeep": unsigned(width // 8),
        "tlast": 1,
        "tuser": TxTuser,
    })


def axis_rx_signature(width: int) -> stream.Signature:
    """``m_axis_rx_*`` as a stream driven by the block (use ``In(...)`` on the user side)."""
    return stream.Signature(axis_rx_layout(width))


def axis_tx_signature(width: int) -> stream.Signature:
    """``s_axis_tx_*`` as a stream driven by the user (``Out(...)`` on the user side)."""
    return stream.Signature(axis_tx_layout(width))


def byte_swap_dw(dw: Value) -> Value:
    """The 32-bit value ``dw`` with its four bytes in reverse order."""
    return Cat(dw[24:32], dw[16:24], dw[8:16], dw[0:8])


def swap_payload_dws(tdata: Value, *, width: int, beat_index: Value, hdr4: Value) -> Value:
    """Byte-reverse the payload DWs of one beat of a TLP that starts in lane 0.

    ``beat_index`` is the beat's position in its TLP, saturated at 2 (0, 1, or 2 for any later
    beat); ``hdr4`` is whether the TLP has a 4-DW header (bit 29 of DW 0, the low bit of Fmt;
    PCIe Base §2.2.1). Header DWs (the first 3 or 4 DWs of the TLP) pass unchanged, every
    other DW is reversed. The mapping is its own inverse, so both directions use it.
    """
    check_tlp_width(width)
    lanes = width // 32

    def is_payload(dw_number: int) -> Value:
        # DW 3 is payload only after a 3-DW header; DWs 0..2 are always header.
        if dw_number >= 4:
            return Const(1)
        return ~hdr4 if dw_number == 3 else Const(0)

    out = []
    for lane in range(lanes):
        dw = tdata[32 * lane:32 * lane + 32]
        payload = Mux(beat_index == 0, is_payload(lane),
                      Mux(beat_index == 1, is_payload(lanes + lane), 1))
        out.append(Mux(payload, byte_swap_dw(dw), dw))
    return Cat(*out)
