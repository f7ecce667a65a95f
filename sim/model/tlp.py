"""A plain-Python TLP encoder/decoder, written from the PCI Express Base Specification.

This is the golden model for the depacketizer and packetizer and the converter the simulation
bridge uses. It takes no layout from the RTL: every bit position below is read off the header
figures of PCIe Base Spec 4.0 §2.2 (Figure 2-5 DW0, §2.2.4.1 memory/I/O request headers,
§2.2.6.2 request DW1, §2.2.7 configuration requests, §2.2.8 messages, §2.2.9 completions).

A header is a ``dict`` with the field names of :data:`hdl.pcie.spec.TlpHeader` (so it can be
packed straight onto the decoded TLP stream with :func:`sim.layout.pack`); a payload is a list
of 32-bit DW values in host-memory byte order (the byte at the lowest address in bits 7:0).
Raw header DWs use the spec's numbering: TLP byte 0 in bits 31:24 of DW 0.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["HEADER_FIELDS", "empty_header", "header_dws", "has_data", "kind", "is_posted",
           "encode", "decode", "raw_beats", "decoded_beats", "join_raw_beats",
           "join_decoded_beats", "bytes_to_dws", "dws_to_bytes", "random_tlp", "masked_beats"]

HEADER_FIELDS = ("fmt_type", "tc", "attr", "ep", "length", "requester_id", "tag", "first_be",
                 "last_be", "addr", "completer_id", "status", "bcm", "byte_count",
                 "lower_address", "cfg_bus", "cfg_device", "cfg_function", "cfg_reg",
                 "msg_code")

# Type[4:0] values (§2.2.1 Table 2-3) grouped by which header words they carry.
_ADDRESS_TYPES = {0x00, 0x01, 0x02, 0x0C, 0x0D, 0x0E}    # MRd/MWr, MRdLk, IO, AtomicOps
_CONFIG_TYPES = {0x04, 0x05}
_COMPLETION_TYPES = {0x0A, 0x0B}


def empty_header() -> dict:
    """A header with every field zero."""
    return {name: 0 for name in HEADER_FIELDS}


def header_dws(fmt_type: int) -> int:
    """Header length in DW: Fmt[0] selects a 4 DW header (§2.2.1 Table 2-2)."""
    return 4 if (fmt_type >> 5) & 1 else 3


def has_data(fmt_type: int) -> bool:
    """Fmt[1] set: the TLP carries a payload (§2.2.1 Table 2-2)."""
    return bool((fmt_type >> 6) & 1)


def kind(fmt_type: int) -> str:
    """``"address"``, ``"config"``, ``"completion"``, ``"message"`` or ``"other"``."""
    type_ = fmt_type & 0x1F
    if (fmt_type >> 5) == 0b100:
        return "other"      # TLP prefix
    if type_ in _ADDRESS_TYPES:
        return "address"
    if type_ in _CONFIG_TYPES:
        return "config"
    if type_ in _COMPLETION_TYPES:
        return "completion"
    if type_ >> 3 == 0b10:
        return "message"
    return "other"


def is_posted(fmt_type: int) -> bool:
    """Memory writes and messages are posted (§2.4.1 Table 2-39)."""
    type_ = fmt_type & 0x1F
    return (type_ == 0 and has_data(fmt_type)) or type_ >> 3 == 0b10


def _field(value: int, width: int, name: str) -> int:
    if not 0 <= value < (1 << width):
        raise ValueError(f"header field {name}={value:#x} does not fit {width} bits")
    return value


def encode(hdr: dict, payload: Sequence[int] = ()) -> list[int]:
    """Raw TLP DWs (header then payload) for a decoded header and payload DWs."""
    h = empty_header()
    h.update(hdr)
    ft = _field(h["fmt_type"], 8, "fmt_type")
    attr = _field(h["attr"], 3, "attr")
    # DW0, Figure 2-5: Fmt[31:29] Type[28:24] T9[23] TC[22:20] T8[19] Attr2[18] LN[17] TH[16]
    # TD[15] EP[14] Attr[13:12] AT[11:10] Length[9:0].
    dw0 = (ft << 24) | (_field(h["tc"], 3, "tc") << 20) | ((attr >> 2) << 18) \
        | (_field(h["ep"], 1, "ep") << 14) | ((attr & 3) << 12) | _field(h["length"], 10, "length")
    dws = [dw0]
    k = kind(ft)
    four = header_dws(ft) == 4
    addr = _field(h["addr"], 64, "addr")
    if k in ("address", "config"):
        # Request DW1 (§2.2.6.2): Requester ID[31:16] Tag[15:8] Last BE[7:4] First BE[3:0].
        dws.append((_field(h["requester_id"], 16, "requester_id") << 16)
                   | (_field(h["tag"], 8, "tag") << 8)
                   | (_field(h["last_be"], 4, "last_be") << 4) | _field(h["first_be"], 4, "first_be"))
    elif k == "message":
        # Message DW1 (§2.2.8): Requester ID[31:16] Tag[15:8] Message Code[7:0].
        dws.append((_field(h["requester_id"], 16, "requester_id") << 16)
                   | (_field(h["tag"], 8, "tag") << 8) | _field(h["msg_code"], 8, "msg_code"))
    elif k == "completion":
        # Completion DW1 (§2.2.9 Figure 2-33): Completer ID[31:16] Status[15:13] BCM[12]
        # Byte Count[11:0]; DW2: Requester ID[31:16] Tag[15:8] R[7] Lower Address[6:0].
        dws.append((_field(h["completer_id"], 16, "completer_id") << 16)
                   | (_field(h["status"], 3, "status") << 13) | (_field(h["bcm"], 1, "bcm") << 12)
                   | _field(h["byte_count"], 12, "byte_count"))
        dws.append((_field(h["requester_id"], 16, "requester_id") << 16)
                   | (_field(h["tag"], 8, "tag") << 8)
                   | _field(h["lower_address"], 7, "lower_address"))
    else:
        dws.append(0)

    if k == "address":
        if four:
            dws += [addr >> 32, addr & 0xFFFF_FFFC]
        else:
            if addr >> 32:
                raise ValueError(f"address {addr:#x} needs a 4 DW header")
            dws.append(addr & 0xFFFF_FFFC)
    elif k == "config":
        # Configuration DW2 (§2.2.7 Figure 2-31): Bus[31:24] Device[23:19] Function[18:16]
        # Ext Reg[11:8] Register[7:2].
        reg = _field(h["cfg_reg"], 10, "cfg_reg")
        dws.append((_field(h["cfg_bus"], 8, "cfg_bus") << 24)
                   | (_field(h["cfg_device"], 5, "cfg_device") << 19)
                   | (_field(h["cfg_function"], 3, "cfg_function") << 16)
                   | ((reg >> 6) << 8) | ((reg & 0x3F) << 2))
    elif k == "message":
        dws += [addr >> 32, addr & 0xFFFF_FFFF][: header_dws(ft) - 2]
    elif k == "other":
        dws += [0] * (header_dws(ft) - 2)
    if len(dws) != header_dws(ft):
        raise ValueError(f"fmt_type {ft:#04x}: header has {len(dws)} DWs, Fmt says "
                         f"{header_dws(ft)}")

    payload = [_field(d, 32, "payload DW") for d in payload]
    if has_data(ft):
        expect = h["length"] or 1024
        if len(payload) != expect:
            raise ValueError(f"Length field says {expect} DW but {len(payload)} payload DWs given")
    elif payload:
        raise ValueError(f"fmt_type {ft:#04x} carries no payload")
    return dws + payload


def decode(dws: Sequence[int]) -> tuple[dict, list[int]]:
    """Split raw TLP DWs into a decoded header and payload DWs (inverse of :func:`encode`).

    Fields a TLP's type does not carry are zero. Payload DWs beyond the Length field (for
    example a TLP digest) are not returned.
    """
    if len(dws) < 3:
        raise ValueError(f"a TLP has at least 3 DWs, got {len(dws)}")
    h = empty_header()
    dw0 = dws[0]
    ft = dw0 >> 24
    nh = header_dws(ft)
    if len(dws) < nh:
        raise ValueError(f"fmt_type {ft:#04x} needs {nh} header DWs, got {len(dws)}")
    h["fmt_type"] = ft
    h["tc"] = (dw0 >> 20) & 7
    h["attr"] = (((dw0 >> 18) & 1) << 2) | ((dw0 >> 12) & 3)
    h["ep"] = (dw0 >> 14) & 1
    h["length"] = dw0 & 0x3FF
    k = kind(ft)
    dw1 = dws[1]
    if k in ("address", "config"):
        h["requester_id"] = dw1 >> 16
        h["tag"] = (dw1 >> 8) & 0xFF
        h["last_be"] = (dw1 >> 4) & 0xF
        h["first_be"] = dw1 & 0xF
    elif k == "message":
        h["requester_id"] = dw1 >> 16
        h["tag"] = (dw1 >> 8) & 0xFF
        h["msg_code"] = dw1 & 0xFF
    elif k == "completion":
        h["completer_id"] = dw1 >> 16
        h["status"] = (dw1 >> 13) & 7
        h["bcm"] = (dw1 >> 12) & 1
        h["byte_count"] = dw1 & 0xFFF
        h["requester_id"] = dws[2] >> 16
        h["tag"] = (dws[2] >> 8) & 0xFF
        h["lower_address"] = dws[2] & 0x7F
    if k == "address":
        h["addr"] = ((dws[2] << 32) | (dws[3] & 0xFFFF_FFFC)) if nh == 4 else dws[2] & 0xFFFF_FFFC
    elif k == "message":
        h["addr"] = (dws[2] << 32) | dws[3]
    elif k == "config":
        dw2 = dws[2]
        h["cfg_bus"] = dw2 >> 24
        h["cfg_device"] = (dw2 >> 19) & 0x1F
        h["cfg_function"] = (dw2 >> 16) & 7
        h["cfg_reg"] = (((dw2 >> 8) & 0xF) << 6) | ((dw2 >> 2) & 0x3F)
    payload = list(dws[nh:])
    if has_data(ft):
        payload = payload[: h["length"] or 1024]
    else:
        payload = []
    return h, payload


def _lanes(width: int) -> int:
    if width not in (64, 128):
        raise ValueError(f"TLP stream width must be 64 or 128, not {width}")
    return width // 32


def _beats(dws: Sequence[int], lanes: int) -> list[tuple[int, int]]:
    beats = []
    for start in range(0, len(dws), lanes):
        chunk = dws[start:start + lanes]
        data = sum(dw << (32 * i) for i, dw in enumerate(chunk))
        beats.append((data, (1 << len(chunk)) - 1))
    return beats


def raw_beats(dws: Sequence[int], width: int = 64) -> list[dict]:
    """Raw-stream beats (``data``/``keep``/``first``/``last``) carrying one whole TLP."""
    beats = _beats(dws, _lanes(width))
    return [{"data": d, "keep": k, "first": int(i == 0), "last": int(i == len(beats) - 1)}
            for i, (d, k) in enumerate(beats)]


def decoded_beats(hdr: dict, payload: Sequence[int], width: int = 64) -> list[dict]:
    """Decoded-stream beats: ``hdr`` on every beat, payload DW 0 in lane 0 of the first beat."""
    h = empty_header()
    h.update(hdr)
    beats = _beats(payload, _lanes(width)) or [(0, 0)]
    return [{"hdr": dict(h), "data": d, "keep": k, "first": int(i == 0),
             "last": int(i == len(beats) - 1)} for i, (d, k) in enumerate(beats)]


def _dws_of(beats: Iterable[dict], lanes: int) -> list[int]:
    dws = []
    for beat in beats:
        for lane in range(lanes):
            if (beat["keep"] >> lane) & 1:
                dws.append((beat["data"] >> (32 * lane)) & 0xFFFF_FFFF)
    return dws


def join_raw_beats(beats: Sequence[dict], width: int = 64) -> list[int]:
    """The DWs of one TLP given as raw-stream beats (checks the framing marks)."""
    _check_framing(beats)
    return _dws_of(beats, _lanes(width))


def join_decoded_beats(beats: Sequence[dict], width: int = 64) -> tuple[dict, list[int]]:
    """``(hdr, payload)`` of one TLP given as decoded-stream beats."""
    _check_framing(beats)
    hdr = beats[0]["hdr"]
    for beat in beats[1:]:
        if beat["hdr"] != hdr:
            raise ValueError("header changed between beats of one TLP")
    return dict(hdr), _dws_of(beats, _lanes(width))


def _check_framing(beats: Sequence[dict]) -> None:
    if not beats:
        raise ValueError("no beats")
    for i, beat in enumerate(beats):
        if beat["first"] != int(i == 0) or beat["last"] != int(i == len(beats) - 1):
            raise ValueError(f"beat {i} of {len(beats)} has first={beat['first']} "
                             f"last={beat['last']}")


def bytes_to_dws(data: bytes) -> list[int]:
    """Payload bytes (a multiple of 4) to DWs in host-memory byte order."""
    if len(data) % 4:
        raise ValueError(f"payload of {len(data)} bytes is not whole DWs")
    return [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]


def dws_to_bytes(dws: Sequence[int]) -> bytes:
    """Inverse of :func:`bytes_to_dws`."""
    return b"".join(dw.to_bytes(4, "little") for dw in dws)


def random_tlp(rng, *, max_payload: int = 32, kinds: Sequence[str] | None = None
               ) -> tuple[dict, list[int]]:
    """A random, well-formed ``(hdr, payload)`` for stream tests.

    ``kinds`` picks among ``"mrd"``, ``"mwr"``, ``"cfg"``, ``"cpl"``, ``"msg"``, ``"io"``;
    payloads are 1..``max_payload`` DWs.
    """
    choice = rng.choice(list(kinds or ("mrd", "mwr", "cfg", "cpl", "msg", "io")))
    h = empty_header()
    h.update(tc=rng.randrange(8), attr=rng.randrange(8), ep=rng.randrange(2),
             tag=rng.randrange(256), requester_id=rng.randrange(1 << 16))
    payload: list[int] = []

    def dws(n):
        return [rng.randrange(1 << 32) for _ in range(n)]

    if choice in ("mrd", "mwr"):
        wide = rng.randrange(2)
        h["addr"] = (rng.randrange(1 << 64) if wide else rng.randrange(1 << 32)) & ~3
        n = rng.randint(1, max_payload)
        h["length"] = n & 0x3FF
        h["first_be"] = rng.randrange(16)
        h["last_be"] = rng.randrange(16) if n > 1 else 0
        if choice == "mwr":
            h["fmt_type"] = 0x60 if wide else 0x40
            payload = dws(n)
        else:
            h["fmt_type"] = 0x20 if wide else 0x00
    elif choice == "cfg":
        write = rng.randrange(2)
        h["fmt_type"] = rng.choice((0x04, 0x05)) | (0x40 if write else 0)
        h.update(length=1, first_be=rng.randrange(16), cfg_bus=rng.randrange(256),
                 cfg_device=rng.randrange(32), cfg_function=rng.randrange(8),
                 cfg_reg=rng.randrange(1024))
        payload = dws(1) if write else []
    elif choice == "cpl":
        with_data = rng.randrange(2)
        h.update(completer_id=rng.randrange(1 << 16), status=rng.choice((0, 1, 2, 4)),
                 bcm=rng.randrange(2), byte_count=rng.randrange(4096),
                 lower_address=rng.randrange(128))
        if with_data:
            n = rng.randint(1, max_payload)
            h.update(fmt_type=0x4A, length=n & 0x3FF)
            payload = dws(n)
        else:
            h["fmt_type"] = 0x0A
    elif choice == "msg":
        with_data = rng.randrange(2)
        h["fmt_type"] = (0x70 if with_data else 0x30) | rng.randrange(6)
        h.update(msg_code=rng.randrange(256), addr=rng.randrange(1 << 64))
        if with_data:
            n = rng.randint(1, max_payload)
            h["length"] = n & 0x3FF
            payload = dws(n)
    else:
        write = rng.randrange(2)
        h.update(fmt_type=0x42 if write else 0x02, length=1, first_be=rng.randrange(16),
                 addr=rng.randrange(1 << 32) & ~3)
        payload = dws(1) if write else []
    return h, payload


def masked_beats(beats: Sequence[dict], width: int = 64) -> list[dict]:
    """Beats with the data of lanes whose ``keep`` bit is clear zeroed (those are don't-care)."""
    out = []
    for beat in beats:
        mask = sum(0xFFFF_FFFF << (32 * i) for i in range(_lanes(width)) if (beat["keep"] >> i) & 1)
        out.append(dict(beat, data=beat["data"] & mask))
    return out
