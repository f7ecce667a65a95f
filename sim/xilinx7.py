"""A model of the 7-series Integrated Block for PCI Express's AXI4-Stream user interface.

Written from Xilinx PG054 (*7 Series FPGAs Integrated Block for PCI Express*, "Designing with
the Core": "Transmitting Outbound Packets", "Receiving Inbound Packets" and the
``m_axis_rx_tuser`` / ``s_axis_tx_tuser`` port tables), independently of the RTL adapters in
``hdl/pcie/xilinx7/``. Plain Python: a TLP is the ``bytes`` of the TLP in wire order (what
cocotbext-pcie's ``Tlp.pack()`` returns), a beat is a dict of the AXI fields.

* :func:`axis_rx_beats`: the beats the block presents on ``m_axis_rx`` for a series of TLPs,
  with the 64-bit rules (every TLP from lane 0, ``tlast``, ``tkeep`` ``0x0F``/``0xFF``) or the
  128-bit rules (a TLP starts at DW 0 or DW 2, may share its first beat with the end of the
  previous TLP, ``is_sof``/``is_eof`` in ``tuser``), with idle cycles chosen at random;
* :class:`AxisTxCollector`: takes the beats the user logic hands to ``s_axis_tx``, checks
  them against the block's rules and gives back whole TLPs;
* :func:`raw_dws`: the same TLP as the project's raw TLP stream carries it (header DWs with
  byte 0 in bits 31:24, payload DWs with the lowest-address byte in bits 7:0; see
  ``hdl/pcie/spec.py``), for scoreboards;
* :func:`random_tlp`: a TLP of random type, header and payload, for stream tests.

Byte order on the block's ``tdata`` (PG054, big-endian within each DW): DW ``i`` of a TLP is
``int.from_bytes(tlp[4*i:4*i+4], "big")``, for header and payload DWs alike.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["tlp_header_dws", "tlp_total_dws", "axis_dws", "raw_dws", "random_tlp",
           "axis_rx_beats", "AxisTxCollector", "RX_SOF_DW0", "RX_SOF_DW2", "rx_eof_code",
           "TX_LAST_TKEEP"]

RX_SOF_DW0 = 0b10000
"""``is_sof`` for a TLP starting at byte 0 (PG054: ``5'b10000``)."""
RX_SOF_DW2 = 0b11000
"""``is_sof`` for a TLP starting at byte 8 (PG054: ``5'b11000``)."""


def rx_eof_code(last_dw: int) -> int:
    """``is_eof`` for a TLP whose last DW is in lane ``last_dw``: present bit and the byte
    lane of its last byte (3, 7, 11, 15; PG054 ``5'b10011`` .. ``5'b11111``)."""
    if not 0 <= last_dw <= 3:
        raise ValueError(f"lane {last_dw} is not a DW lane of a 128-bit beat")
    return 0b10000 | (4 * last_dw + 3)


TX_LAST_TKEEP = {64: {0x0F, 0xFF}, 128: {0x000F, 0x00FF, 0x0FFF, 0xFFFF}}
"""``s_axis_tx_tkeep`` values the block accepts on the last beat of a TLP (whole DWs from lane 0)."""


def tlp_header_dws(tlp: bytes) -> int:
    """3 or 4: the header length from the Fmt field (PCIe Base §2.2.1, Table 2-2)."""
    return 4 if tlp[0] & 0x20 else 3


def tlp_total_dws(tlp: bytes) -> int:
    """Header plus payload DWs, from Fmt and Length (a Length of 0 means 1024 DW)."""
    hdr = tlp_header_dws(tlp)
    if not tlp[0] & 0x40:
        return hdr
    length = ((tlp[2] & 0x03) << 8) | tlp[3]
    return hdr + (length or 1024)


def _check(tlp: bytes) -> None:
    if len(tlp) % 4 or len(tlp) < 12 or len(tlp) != 4 * tlp_total_dws(tlp):
        raise ValueError(f"{len(tlp)} bytes are not a whole TLP (Fmt/Length say "
                         f"{4 * tlp_total_dws(tlp) if len(tlp) >= 4 else '?'} bytes)")


def axis_dws(tlp: bytes) -> list[int]:
    """The TLP's DWs as the block puts them on ``tdata``: first byte of each DW in bits 31:24."""
    _check(tlp)
    return [int.from_bytes(tlp[i:i + 4], "big") for i in range(0, len(tlp), 4)]


def raw_dws(tlp: bytes) -> list[int]:
    """The TLP's DWs on the raw TLP stream: header DWs big-endian, payload DWs little-endian."""
    _check(tlp)
    hdr = tlp_header_dws(tlp)
    return [int.from_bytes(tlp[i:i + 4], "big" if i < 4 * hdr else "little")
            for i in range(0, len(tlp), 4)]


# Fmt/Type bytes a TLP stream can carry (PCIe Base §2.2.1, Table 2-3): requests with and
# without data, 3- and 4-DW headers, completions, messages.
_FMT_TYPES = (0x00, 0x20, 0x40, 0x60, 0x02, 0x42, 0x04, 0x44, 0x0A, 0x4A, 0x30, 0x34, 0x70)


def random_tlp(rng: random.Random, *, max_payload_dws: int = 32) -> bytes:
    """A TLP with a random Fmt/Type, random header bytes and a random payload of 1 to
    ``max_payload_dws`` DWs when the type carries data. Only Fmt, Type and Length are
    meaningful; the stream adapters must carry any header bytes unchanged."""
    fmt_type = rng.choice(_FMT_TYPES)
    hdr = 4 if fmt_type & 0x20 else 3
    length = rng.randint(1, max_payload_dws) if fmt_type & 0x40 else rng.randint(0, 1023)
    head = bytearray(rng.randbytes(4 * hdr))
    head[0] = fmt_type
    head[2] = (head[2] & 0xFC) | ((length >> 8) & 0x03)
    head[3] = length & 0xFF
    payload = rng.randbytes(4 * length) if fmt_type & 0x40 else b""
    return bytes(head) + payload


def axis_rx_beats(tlps: list[bytes], *, width: int, rng: random.Random,
                  idle: float = 0.2, straddle: float = 0.5, bar_hit: int = 0x01) -> list[dict | None]:
    """The ``m_axis_rx`` beats the block presents for ``tlps`` (``None`` = ``tvalid`` low).

    ``idle`` is the chance of an idle cycle before each beat. At 128 bits, ``straddle`` is the
    chance that a TLP that can start in the upper half of a beat (the previous TLP ended in
    DW 0 or 1 of it, or the beat would otherwise be empty) does so. Fields PG054 leaves
    unused at a width (``tlast``/``tkeep`` at 128 bits, ``is_sof``/``is_eof`` at 64 bits) get
    random values, so a consumer that looks at them fails.
    """
    if width not in (64, 128):
        raise ValueError(f"width {width} is not 64 or 128")
    lanes = width // 32
    beats: list[dict | None] = []

    def emit(dws: list[int | None], tuser: dict, tlast: int, tkeep: int) -> None:
        while rng.random() < idle:
            beats.append(None)
        tdata = sum((dw or 0) << (32 * i) for i, dw in enumerate(dws))
        beats.append({"tdata": tdata, "tkeep": tkeep, "tlast": tlast, "tuser": tuser})

    def tuser(sof: int, eof: int) -> dict:
        return {"ecrc_err": 0, "err_fwd": 0, "bar_hit": bar_hit,
                "is_sof": {"byte": sof & 0xF, "present": sof >> 4},
                "rsvd": 0, "is_eof": {"byte": eof & 0xF, "present": eof >> 4}}

    if width == 64:
        for tlp in tlps:
            dws = axis_dws(tlp)
            for i in range(0, len(dws), 2):
                chunk = dws[i:i + 2]
                last = i + 2 >= len(dws)
                tkeep = 0xFF if len(chunk) == 2 else 0x0F
                noise = rng.getrandbits(5)
                emit(chunk, tuser(noise, rng.getrandbits(5)), int(last),
                     tkeep if last else 0xFF)
        return beats

    # 128 bits: lay the TLPs out on a DW grid of 4 lanes. A TLP starts on lane 0 or 2.
    slots: list[int | None] = []       # DW values by grid position, None = empty
    sof_at: dict[int, int] = {}         # grid position -> SOF code
    eof_at: dict[int, int] = {}         # grid position -> EOF code (at the last DW)
    for tlp in tlps:
        pos = len(slots)
        lane = pos % lanes
        if lane in (1, 3):                      # starts are quad-word aligned
            slots.append(None)
            pos += 1
            lane = pos % lanes
        if lane == 0 and rng.random() < straddle * 0.3:
            slots.extend([None, None])          # start in the upper half of a fresh beat
            pos += 2
            lane = 2
        elif lane == 2 and rng.random() >= straddle:
            slots.extend([None, None])          # no straddle: start on the next beat
            pos += 2
            lane = 0
        sof_at[pos] = RX_SOF_DW0 if lane == 0 else RX_SOF_DW2
        dws = axis_dws(tlp)
        slots.extend(dws)
        last = pos + len(dws) - 1
        eof_at[last] = rx_eof_code(last % lanes)
    while len(slots) % lanes:
        slots.append(None)
    for base in range(0, len(slots), lanes):
        sof = next((sof_at[p] for p in range(base, base + lanes) if p in sof_at), 0)
        eof = next((eof_at[p] for p in range(base, base + lanes) if p in eof_at), 0)
        emit(slots[base:base + lanes], tuser(sof, eof), rng.getrandbits(1),
             rng.getrandbits(16))
    return beats


@dataclass
class AxisTxCollector:
    """Reassembles TLPs from ``s_axis_tx`` beats and checks the block's transmit rules.

    Rules checked (PG054, "Transmitting Outbound Packets"): every beat but a TLP's last has
    ``tkeep`` all ones; the last beat's ``tkeep`` marks whole DWs from lane 0
    (:data:`TX_LAST_TKEEP`); the beat that ends a TLP carries no DW beyond the TLP's length
    (from its header); ``tuser`` asks for no ECRC, poisoning, streaming or discontinue.
    A violation raises ``AssertionError`` naming the beat.
    """
    width: int
    tlps: list[bytes] = field(default_factory=list)
    _dws: list[int] = field(default_factory=list)
    beats: int = 0

    def push(self, beat: dict) -> bytes | None:
        """Take one accepted beat; return the TLP it completes, if any."""
        lanes = self.width // 32
        self.beats += 1
        tkeep, tlast, tuser = beat["tkeep"], beat["tlast"], beat["tuser"]
        where = f"s_axis_tx beat {self.beats}"
        assert not any(tuser.values()), f"{where}: tuser {tuser} must be all zero"
        full = (1 << (self.width // 8)) - 1
        if not tlast:
            assert tkeep == full, f"{where}: tkeep {tkeep:#x} on a beat that is not the last"
        else:
            assert tkeep in TX_LAST_TKEEP[self.width], f"{where}: last tkeep {tkeep:#x}"
        ndw = lanes if tkeep == full else bin(tkeep).count("1") // 4
        self._dws.extend((beat["tdata"] >> (32 * i)) & 0xFFFF_FFFF for i in range(ndw))
        if not tlast:
            return None
        tlp = b"".join(dw.to_bytes(4, "big") for dw in self._dws)
        self._dws = []
        assert len(tlp) >= 12 and len(tlp) == 4 * tlp_total_dws(tlp), (
            f"{where}: TLP of {len(tlp)} bytes, header says {4 * tlp_total_dws(tlp)}")
        self.tlps.append(tlp)
        return tlp
