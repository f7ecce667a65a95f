"""Port and internal layouts of the DMA engine (:class:`~hdl.pcie.dma.dma_engine.DmaEngine`).

The two layouts other blocks drive or read are :data:`FcCreditLimit` (the transmitter's flow
control credit limits, PCIe Base §2.6.1.2 and §3.4) and :data:`DmaStatus` (counters). The rest
are the engine's internal record formats, shared between its components.
"""
from amaranth.hdl import unsigned
from amaranth.lib import data

from hdl.pcie.dma_port import DmaError

__all__ = ["FcCreditLimit", "UNLIMITED_CREDITS", "DmaStatus", "FC_HDR_BITS", "FC_DATA_BITS", "FC_DATA_BYTES",
           "read_sub_layout", "issue_layout", "refuse_layout", "slot_event_layout",
           "ring_write_layout", "write_desc_layout"]

FC_HDR_BITS = 8
"""Width of a header credit counter: HdrFC is 8 bits (§3.4.2, without scaled flow control)."""
FC_DATA_BITS = 12
"""Width of a data credit counter: DataFC is 12 bits (§3.4.2, without scaled flow control)."""
FC_DATA_BYTES = 16
"""Bytes of payload per data credit: one credit is 4 DW (§2.6.1, Flow Control Units)."""

FcCreditLimit = data.StructLayout({
    # CREDIT_LIMIT of the transmitter's gating function for each credit type (§2.6.1.2):
    # the value the link partner last advertised for it in InitFC/UpdateFC (§3.4.2, modulo
    # 2^n), less what the function's other transmitters have consumed of that type.
    "ph": FC_HDR_BITS,      # Posted Request Header (MemWr)
    "pd": FC_DATA_BITS,     # Posted Request Data
    "nph": FC_HDR_BITS,     # Non-Posted Request Header (MemRd)
    "npd": FC_DATA_BITS,    # Non-Posted Request Data (MemRd uses none; kept for completeness)
    # The link partner advertised infinite credits of that type (initial value 0, §3.4.1).
    "ph_inf": 1,
    "pd_inf": 1,
    "nph_inf": 1,
    "npd_inf": 1,
    # Flow control initialisation is complete (FC_INIT2 done, §3.4.1); nothing is sent before.
    "valid": 1,
})

UNLIMITED_CREDITS = FcCreditLimit.const({"ph_inf": 1, "pd_inf": 1, "nph_inf": 1, "npd_inf": 1,
                                         "valid": 1})
"""Credit limits for a PCIe core (or a link model) that holds a TLP back itself while its
partner lacks credit, back-pressuring the transmit stream: the DMA engine never waits."""

DmaStatus = data.StructLayout({
    "cpl_discarded": 16,    # completions dropped: unknown/idle/timed-out tag, not a Cpl(D), or
                            # data outside its request (malformed)
    "cpl_timeouts": 16,     # requests ended by the completion timeout (§2.8)
    "cpl_errors": 16,       # requests ended by UR/CA/CRS status or a poisoned completion
})


def read_sub_layout(ring_addr_bits: int, slot_bits: int) -> data.StructLayout:
    """One read request (at most one Max_Read_Request_Size piece) from a read channel."""
    return data.StructLayout({
        "addr": 64,
        "len": range(4097),             # bytes, 1..4096, never crossing a 4 KiB boundary
        "slot": unsigned(slot_bits),    # the channel's reorder slot for this piece
        "ring_base": unsigned(ring_addr_bits),   # buffer beat holding the first byte
    })


def issue_layout(chan_bits: int, slot_bits: int, ring_addr_bits: int, lane_bits: int
                 ) -> data.StructLayout:
    """What the completion tracker remembers about an issued MemRd, written at issue."""
    return data.StructLayout({
        "tag": 8,
        "chan": unsigned(chan_bits),
        "slot": unsigned(slot_bits),
        "ring_base": unsigned(ring_addr_bits),
        # byte offset, from the start of the buffer beat ring_base, just past the last byte
        # requested: (addr mod beat bytes) + len
        "end_rel": range((1 << lane_bits) * 4 + 4097),
    })


def refuse_layout(chan_bits: int, slot_bits: int) -> data.StructLayout:
    """A read piece that was not issued (Bus Master Enable clear)."""
    return data.StructLayout({
        "chan": unsigned(chan_bits),
        "slot": unsigned(slot_bits),
    })


def slot_event_layout(chan_bits: int, slot_bits: int) -> data.StructLayout:
    """A read piece has finished (all its data is in the buffer, or it failed)."""
    return data.StructLayout({
        "valid": 1,
        "chan": unsigned(chan_bits),
        "slot": unsigned(slot_bits),
        "error": DmaError,
    })


def ring_write_layout(chan_bits: int, lanes: int, ring_addr_bits: int) -> data.StructLayout:
    """Completion data written into a read channel's buffer, one DW per lane memory."""
    return data.StructLayout({
        "chan": unsigned(chan_bits),
        "lane": data.ArrayLayout(data.StructLayout({
            "en": 1,
            "addr": unsigned(ring_addr_bits),
            "data": 32,
        }), lanes),
    })


write_desc_layout = data.StructLayout({
    # One MemWr TLP (or, with bad set, a refused command whose data is swallowed).
    "addr": 64,
    "len": range(1 << 17),      # bytes; 1..4096 for a TLP, anything for a refused command
    "cmd_first": 1,             # first TLP of its command
    "cmd_last": 1,              # last TLP of its command
    "cmd_beats": range(1 << 15),   # data beats of the whole command (on cmd_first)
    "bad": 1,                   # BAD_LENGTH: swallow cmd_beats beats, send nothing
})
