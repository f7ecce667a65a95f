"""Raw header DWs <-> :data:`~hdl.pcie.spec.TlpHeader`, for the depacketizer and packetizer only.

These functions are the whole of the design's knowledge of where header fields sit in raw DWs
(PCIe Base §2.2.1 DW0, §2.2.4.1 memory/I/O addresses, §2.2.6.2 request DW1, §2.2.7
configuration DW2, §2.2.8 message DW1, §2.2.9 completion DW1/DW2). Every other block works on
the decoded header.
"""
from amaranth.hdl import Cat, Const, Module, Value

from .spec import TlpCfgDW2, TlpCplDW1, TlpCplDW2, TlpDW0, TlpMsgDW1, TlpReqDW1

__all__ = ["tlp_type_class", "decode_header", "encode_header"]


def tlp_type_class(fmt_type: Value) -> tuple[Value, Value, Value, Value]:
    """``(address, config, completion, message)`` flags of an 8-bit Fmt/Type value.

    *address* covers memory (incl. locked) reads/writes, I/O and AtomicOp requests, whose
    DW2 (and DW3) carry an address (§2.2.4.1, Table 2-3); TLP prefixes (Fmt 100b) are in no
    class.
    """
    fmt_type = Value.cast(fmt_type)
    type_ = fmt_type[0:5]
    prefix = fmt_type[5:8] == 0b100
    address = ~prefix & ((type_ == 0x00) | (type_ == 0x01) | (type_ == 0x02)
                         | (type_ == 0x0C) | (type_ == 0x0D) | (type_ == 0x0E))
    config = ~prefix & ((type_ == 0x04) | (type_ == 0x05))
    completion = ~prefix & ((type_ == 0x0A) | (type_ == 0x0B))
    message = ~prefix & (type_[3:5] == 0b10)
    return address, config, completion, message


def decode_header(m: Module, dws: list[Value], hdr) -> None:
    """Drive ``hdr`` (a ``TlpHeader`` view) combinationally from four raw header DWs.

    DW3 is ignored for 3 DW headers; fields a type does not carry are driven to zero.
    """
    dw0 = TlpDW0(dws[0])
    four = dw0.fmt_type.as_value()[5]
    address, config, completion, message = tlp_type_class(dw0.fmt_type.as_value())
    req = TlpReqDW1(dws[1])
    msg = TlpMsgDW1(dws[1])
    cpl1 = TlpCplDW1(dws[1])
    cpl2 = TlpCplDW2(dws[2])
    cfg = TlpCfgDW2(dws[2])

    m.d.comb += [
        hdr.fmt_type.eq(dw0.fmt_type),
        hdr.tc.eq(dw0.tc),
        hdr.attr.eq(Cat(dw0.attr, dw0.attr2)),
        hdr.ep.eq(dw0.ep),
        hdr.length.eq(dw0.length),
    ]
    with m.If(address | config):
        m.d.comb += [
            hdr.requester_id.eq(req.requester_id),
            hdr.tag.eq(req.tag),
            hdr.first_be.eq(req.first_be),
            hdr.last_be.eq(req.last_be),
        ]
    with m.If(address):
        with m.If(four):
            m.d.comb += hdr.addr.eq(Cat(Const(0, 2), dws[3][2:32], dws[2]))
        with m.Else():
            m.d.comb += hdr.addr.eq(Cat(Const(0, 2), dws[2][2:32]))
    with m.If(config):
        m.d.comb += [
            hdr.cfg_bus.eq(cfg.bus),
            hdr.cfg_device.eq(cfg.device),
            hdr.cfg_function.eq(cfg.function),
            hdr.cfg_reg.eq(Cat(cfg.reg, cfg.ext_reg)),
        ]
    with m.If(completion):
        m.d.comb += [
            hdr.completer_id.eq(cpl1.completer_id),
            hdr.status.eq(cpl1.status),
            hdr.bcm.eq(cpl1.bcm),
            hdr.byte_count.eq(cpl1.byte_count),
            hdr.lower_address.eq(cpl2.lower_address),
            hdr.tag.eq(cpl2.tag),
            hdr.requester_id.eq(cpl2.requester_id),
        ]
    with m.If(message):
        m.d.comb += [
            hdr.requester_id.eq(msg.requester_id),
            hdr.tag.eq(msg.tag),
            hdr.msg_code.eq(msg.code),
            # Bytes 8-15 of a message are type specific (§2.2.8): kept whole, DW2 high.
            hdr.addr.eq(Cat(dws[3], dws[2])),
        ]


def encode_header(m: Module, hdr, dws: list[Value]) -> None:
    """Drive four raw header DWs combinationally from ``hdr`` (a ``TlpHeader`` view).

    DW3 is zero for 3 DW headers; header bits the decoded form does not carry (TD, TH, LN,
    AT, the 10-bit tag bits, PH) are sent as zero.
    """
    dw0 = TlpDW0(dws[0])
    fmt_type = hdr.fmt_type.as_value()
    four = fmt_type[5]
    address, config, completion, message = tlp_type_class(fmt_type)
    req = TlpReqDW1(dws[1])
    msg = TlpMsgDW1(dws[1])
    cpl1 = TlpCplDW1(dws[1])
    cpl2 = TlpCplDW2(dws[2])
    cfg = TlpCfgDW2(dws[2])

    m.d.comb += [
        dw0.fmt_type.eq(hdr.fmt_type),
        dw0.tc.eq(hdr.tc),
        dw0.attr.eq(hdr.attr[0:2]),
        dw0.attr2.eq(hdr.attr[2]),
        dw0.ep.eq(hdr.ep),
        dw0.length.eq(hdr.length),
    ]
    with m.If(address | config):
        m.d.comb += [
            req.requester_id.eq(hdr.requester_id),
            req.tag.eq(hdr.tag),
            req.first_be.eq(hdr.first_be),
            req.last_be.eq(hdr.last_be),
        ]
    with m.If(address):
        with m.If(four):
            m.d.comb += [
                dws[2].eq(hdr.addr[32:64]),
                dws[3].eq(Cat(Const(0, 2), hdr.addr[2:32])),
            ]
        with m.Else():
            m.d.comb += dws[2].eq(Cat(Const(0, 2), hdr.addr[2:32]))
    with m.If(config):
        m.d.comb += [
            cfg.bus.eq(hdr.cfg_bus),
            cfg.device.eq(hdr.cfg_device),
            cfg.function.eq(hdr.cfg_function),
            cfg.reg.eq(hdr.cfg_reg[0:6]),
            cfg.ext_reg.eq(hdr.cfg_reg[6:10]),
        ]
    with m.If(completion):
        m.d.comb += [
            cpl1.completer_id.eq(hdr.completer_id),
            cpl1.status.eq(hdr.status),
            cpl1.bcm.eq(hdr.bcm),
            cpl1.byte_count.eq(hdr.byte_count),
            cpl2.lower_address.eq(hdr.lower_address),
            cpl2.tag.eq(hdr.tag),
            cpl2.requester_id.eq(hdr.requester_id),
        ]
    with m.If(message):
        m.d.comb += [
            msg.requester_id.eq(hdr.requester_id),
            msg.tag.eq(hdr.tag),
            msg.code.eq(hdr.msg_code),
            dws[2].eq(hdr.addr[32:64]),
            dws[3].eq(hdr.addr[0:32]),
        ]
