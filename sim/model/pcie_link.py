"""Timing of TLPs on a PCIe link: how long each one occupies the wire in one direction.

The figures, per TLP, for 2.5 and 5.0 GT/s (8b/10b encoding, PCIe Base §4.2.1; framing
§4.2.2; Data Link Layer §3.6):

* framing: STP and END symbols, 2 bytes;
* sequence number: 2 bytes (added by the Data Link Layer);
* header: 12 bytes (3 DW) or 16 bytes (4 DW);
* LCRC: 4 bytes; no ECRC (the engine sends no TLP digest).

DLLPs (Ack/Nak, UpdateFC; 8 bytes each on the wire) and SKP ordered sets are not counted:
they take a few percent of the opposite direction's bandwidth on a real link, so the
payload limits here are upper bounds. A lane carries ``rate * 8 / 10`` bits per second.
"""
from __future__ import annotations

import dataclasses

__all__ = ["LINKS", "LinkSpec", "Wire", "TLP_FRAMING_BYTES", "TLP_OVERHEAD_3DW",
           "payload_limit"]

TLP_FRAMING_BYTES = 2 + 2 + 4       # STP/END, sequence number, LCRC
TLP_OVERHEAD_3DW = TLP_FRAMING_BYTES + 12
TLP_OVERHEAD_4DW = TLP_FRAMING_BYTES + 16


@dataclasses.dataclass(frozen=True)
class LinkSpec:
    name: str
    gts: float          # transfer rate per lane, GT/s
    lanes: int

    @property
    def bytes_per_second(self) -> float:
        """Raw bytes per second in one direction after 8b/10b."""
        return self.gts * 1e9 * self.lanes * 8 / 10 / 8

    def bytes_per_clock(self, clock_hz: float) -> float:
        return self.bytes_per_second / clock_hz


LINKS = {
    "gen1x1": LinkSpec("gen1x1", 2.5, 1),
    "gen2x1": LinkSpec("gen2x1", 5.0, 1),
    "gen2x4": LinkSpec("gen2x4", 5.0, 4),
}


def payload_limit(link: LinkSpec, clock_hz: float, size: int, mps: int) -> float:
    """Best payload bytes per clock for a transfer of ``size`` bytes (MPS-aligned start).

    The transfer needs at least ``ceil(size / mps)`` TLPs (MemWr, or the completions of a
    read, each at most Max_Payload_Size), each with 3 DW header overhead.
    """
    tlps = -(-size // mps)
    return link.bytes_per_clock(clock_hz) * size / (size + tlps * TLP_OVERHEAD_3DW)


class Wire:
    """One direction of a link: TLPs cross one after another, each for its wire time."""

    def __init__(self, link: LinkSpec, clock_hz: float):
        self.bytes_per_clock = link.bytes_per_clock(clock_hz)
        self.busy_until = 0.0

    def tlp_clocks(self, payload_bytes: int, four_dw: bool = False) -> float:
        overhead = TLP_OVERHEAD_4DW if four_dw else TLP_OVERHEAD_3DW
        return (payload_bytes + overhead) / self.bytes_per_clock

    def send(self, now: float, payload_bytes: int, four_dw: bool = False) -> float:
        """Queue a TLP at time ``now`` (clocks); return when its last byte has crossed."""
        start = max(now, self.busy_until)
        self.busy_until = start + self.tlp_clocks(payload_bytes, four_dw)
        return self.busy_until

    def idle(self, now: float) -> bool:
        return self.busy_until <= now
