"""Helpers that build the decoded header of a memory request (PCIe Base §2.2.4, §2.2.5).

Shared by the read requester (MemRd) and the write channels (MemWr).
"""
from amaranth.hdl import Cat, Const, Mux, Value

from hdl.pcie.spec import TlpFmtType

__all__ = ["request_dw_length", "request_byte_enables", "fill_mem_request"]


def request_dw_length(addr: Value, length: Value) -> Value:
    """DWs covered by ``length`` (1..4096) bytes starting at byte address ``addr``.

    The result is 1..1025 wide enough; as a Length field 1024 encodes as 0 (§2.2.2), which
    truncating to 10 bits does.
    """
    return (addr[:2] + length + 3) >> 2


def request_byte_enables(addr: Value, length: Value) -> tuple[Value, Value]:
    """First DW and Last DW Byte Enables for ``length`` bytes at ``addr`` (§2.2.5).

    For a single-DW request the First BE covers the bytes and Last BE is 0000b.
    """
    start = addr[:2]
    end = (addr[:2] + length - 1)[:2]           # byte index of the last byte within its DW
    first = (Const(0xF, 4) << start)[:4]
    last = Const(0xF, 4) >> ~end              # ~end == 3 - end for 2 bits
    single = request_dw_length(addr, length) == 1
    return Mux(single, first & last, first), Mux(single, 0, last)


def fill_mem_request(m, hdr, *, write: bool, addr: Value, length: Value,
                     requester_id: Value, tag: Value) -> None:
    """Drive the decoded header ``hdr`` (a ``TlpHeader`` view) for a memory request.

    Addresses below 4 GiB use the 3 DW format, others the 4 DW format (§2.2.4.1: a request
    below 4 GiB must use the 32-bit format).
    """
    high = addr[32:].any()
    if write:
        fmt_type = Mux(high, TlpFmtType.MWR64, TlpFmtType.MWR32)
    else:
        fmt_type = Mux(high, TlpFmtType.MRD64, TlpFmtType.MRD32)
    first_be, last_be = request_byte_enables(addr, length)
    m.d.comb += [
        hdr.fmt_type.eq(fmt_type),
        hdr.length.eq(request_dw_length(addr, length)),
        hdr.requester_id.eq(requester_id),
        hdr.tag.eq(tag),
        hdr.first_be.eq(first_be),
        hdr.last_be.eq(last_be),
        hdr.addr.eq(Cat(Const(0, 2), addr[2:])),
    ]
