"""Host memory and memory completer: what a root complex does with a device's DMA requests.

Written from the PCI Express Base Specification (Revision 4.0 numbering):

* MemWr (§2.2.7) writes the payload bytes whose byte enables are set (§2.2.5);
* MemRd is answered with one or more completions (§2.2.9, §2.3.1.1): each carries at most
  Max_Payload_Size bytes; when a read is answered by several completions, the first ends at
  a Read Completion Boundary (RCB, 64 or 128 bytes) and every later one but the last starts
  and ends on one; Byte Count is the number of bytes still to return including this
  completion's, Lower Address the low 7 bits of the address of its first byte; the
  completions of one request go in address order, those of different requests in any;
* the requests themselves are checked against the rules a requester must follow (no 4 KiB
  crossing and at most Max_Read_Request_Size / Max_Payload_Size bytes, §2.2.7; 32-bit
  format below 4 GiB, §2.2.4.1; byte enable rules, §2.2.5), and a violation raises
  :class:`ProtocolError`;
* faults can be injected per read: UR / CA / CRS status (§2.2.9, Table 2-34), poisoned data
  (EP, §2.7.2), and lost completions (which the requester must time out, §2.8).

Pure Python: no simulator, no cocotb.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import random
from collections.abc import Callable

__all__ = ["ProtocolError", "Fault", "MemRequest", "Completion", "HostMemory", "PcieHost",
           "read_byte_count", "request_bytes"]

log = logging.getLogger(__name__)

PAGE = 4096
STATUS_SC, STATUS_UR, STATUS_CRS, STATUS_CA = 0b000, 0b001, 0b010, 0b100


class ProtocolError(Exception):
    """A request broke a rule of the PCIe Base Specification."""


class Fault(enum.Enum):
    """What goes wrong with one read request."""
    NONE = "none"
    UR = "ur"               # a completion with Unsupported Request status ends it
    CA = "ca"               # Completer Abort
    CRS = "crs"             # Configuration Request Retry Status (malformed for memory)
    POISONED = "poisoned"   # one completion carries EP = 1
    LOST = "lost"           # some completions never arrive


@dataclasses.dataclass
class MemRequest:
    """A memory request TLP, decoded (§2.2.7)."""
    write: bool
    addr: int                   # DW-aligned byte address
    length_dw: int              # 1..1024
    first_be: int
    last_be: int
    tag: int = 0
    requester_id: int = 0
    four_dw: bool = False       # 64-bit address format
    data: bytes = b""           # MemWr payload, length_dw * 4 bytes


@dataclasses.dataclass
class Completion:
    """A completion TLP, decoded (§2.2.9)."""
    tag: int
    requester_id: int
    completer_id: int
    status: int
    byte_count: int             # 1..4096 (the wire encodes 4096 as 0)
    lower_address: int
    length_dw: int              # 0 for a Cpl without data
    data: bytes = b""
    ep: bool = False


def _check_be(first_be: int, last_be: int, length_dw: int, addr: int) -> None:
    """Byte enable rules of §2.2.5."""
    if length_dw == 1:
        if last_be != 0:
            raise ProtocolError(f"1 DW request with Last DW BE {last_be:04b}, must be 0000b")
        return
    if first_be == 0 or last_be == 0:
        raise ProtocolError(f"{length_dw} DW request with a zero byte enable "
                            f"(first {first_be:04b}, last {last_be:04b})")
    qw_aligned_2dw = length_dw == 2 and addr % 8 == 0
    if not qw_aligned_2dw:
        # Contiguous: first BE's ones run up to bit 3, last BE's ones start at bit 0.
        if first_be not in (0b1111, 0b1110, 0b1100, 0b1000):
            raise ProtocolError(f"non-contiguous First DW BE {first_be:04b}")
        if last_be not in (0b0001, 0b0011, 0b0111, 0b1111):
            raise ProtocolError(f"non-contiguous Last DW BE {last_be:04b}")


def read_byte_count(req: MemRequest) -> int:
    """Bytes a MemRd asks for: the Byte Count of its first completion (§2.2.9, Table 2-37)."""
    if req.length_dw == 1:
        be = req.first_be
        if be == 0:
            return 1            # zero-length read
        lo = (be & -be).bit_length() - 1
        hi = be.bit_length() - 1
        return hi - lo + 1
    lo = (req.first_be & -req.first_be).bit_length() - 1
    hi = req.last_be.bit_length() - 1
    return req.length_dw * 4 - lo - (3 - hi)


def request_bytes(req: MemRequest) -> tuple[int, int]:
    """First enabled byte address and number of bytes between it and the last one."""
    lo = (req.first_be & -req.first_be).bit_length() - 1 if req.first_be else 0
    return req.addr + lo, read_byte_count(req)


class HostMemory:
    """Sparse 64-bit byte-addressed memory.

    Bytes never written read as ``background(addr)``: by default a fixed function of the
    address, so that any address, including above 4 GiB, has known contents.
    """

    def __init__(self, background: Callable[[int], int] | None = None):
        self._pages: dict[int, bytearray] = {}
        self._background = background or (lambda a: (a * 0x9E3779B1 >> 13) & 0xFF)

    def _page(self, number: int) -> bytearray:
        page = self._pages.get(number)
        if page is None:
            base = number * PAGE
            page = bytearray(self._background(base + i) for i in range(PAGE))
            self._pages[number] = page
        return page

    def read(self, addr: int, length: int) -> bytes:
        out = bytearray()
        while length:
            page = self._page(addr // PAGE)
            off = addr % PAGE
            n = min(length, PAGE - off)
            out += page[off:off + n]
            addr += n
            length -= n
        return bytes(out)

    def write(self, addr: int, data: bytes, mask: list[bool] | None = None) -> None:
        for i, byte in enumerate(data):
            if mask is None or mask[i]:
                a = addr + i
                self._page(a // PAGE)[a % PAGE] = byte


class PcieHost:
    """A root complex's memory completer.

    Parameters
    ----------
    memory : HostMemory
        The memory served.
    rcb : int
        Read Completion Boundary, 64 or 128 bytes (§2.3.1.1).
    max_payload : int
        The device's Max_Payload_Size in bytes: no completion carries more, no MemWr may.
    max_read_request : int
        The device's Max_Read_Request_Size in bytes: no MemRd may ask for more.
    split : str
        How reads are cut: ``"max"`` (as few completions as the rules allow),
        ``"rcb"`` (at every RCB), ``"random"`` (at random RCBs).
    completer_id : int
        The Completer ID put in completions.
    rng : random.Random
        Source of randomness for ``split="random"``.
    """

    def __init__(self, memory: HostMemory, *, rcb: int = 64, max_payload: int = 256,
                 max_read_request: int = 512, split: str = "max", completer_id: int = 0,
                 rng: random.Random | None = None):
        if rcb not in (64, 128):
            raise ValueError(f"rcb must be 64 or 128 bytes (§2.3.1.1), not {rcb}")
        if max_payload not in (128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"max_payload must be 128..4096 bytes, a power of two, not "
                             f"{max_payload}")
        if max_read_request not in (128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"max_read_request must be 128..4096 bytes, a power of two, "
                             f"not {max_read_request}")
        if split not in ("max", "rcb", "random"):
            raise ValueError(f"split must be 'max', 'rcb' or 'random', not {split!r}")
        self.memory = memory
        self.rcb = rcb
        self.max_payload = max_payload
        self.max_read_request = max_read_request
        self.split = split
        self.completer_id = completer_id
        self.rng = rng or random.Random(0)

    # --- request checks -------------------------------------------------------------------
    def check(self, req: MemRequest) -> None:
        """Raise :class:`ProtocolError` if ``req`` breaks a requester rule."""
        if req.addr % 4:
            raise ProtocolError(f"address {req.addr:#x} is not DW aligned")
        if not 1 <= req.length_dw <= 1024:
            raise ProtocolError(f"length {req.length_dw} DW out of range")
        if req.addr < 1 << 32 and req.four_dw:
            raise ProtocolError(f"4 DW header for address {req.addr:#x} below 4 GiB (§2.2.4.1)")
        if req.addr >= 1 << 32 and not req.four_dw:
            raise ProtocolError(f"3 DW header cannot carry address {req.addr:#x}")
        end = req.addr + req.length_dw * 4
        if req.addr // PAGE != (end - 1) // PAGE:
            raise ProtocolError(f"request {req.addr:#x}+{req.length_dw * 4} crosses a 4 KiB "
                                f"boundary (§2.2.7)")
        limit = self.max_payload if req.write else self.max_read_request
        if req.length_dw * 4 > limit:
            raise ProtocolError(f"{'MemWr' if req.write else 'MemRd'} of {req.length_dw} DW "
                                f"exceeds {'Max_Payload_Size' if req.write else 'Max_Read_Request_Size'} "
                                f"{limit} bytes")
        _check_be(req.first_be, req.last_be, req.length_dw, req.addr)
        if req.write and len(req.data) != req.length_dw * 4:
            raise ProtocolError(f"MemWr Length {req.length_dw} DW but {len(req.data)} bytes "
                                f"of payload")

    # --- writes ---------------------------------------------------------------------------
    def write(self, req: MemRequest) -> None:
        """Apply a MemWr: only bytes with their byte enable set change (§2.2.5)."""
        self.check(req)
        n = req.length_dw * 4
        mask = [True] * n
        for i in range(4):
            mask[i] = bool(req.first_be >> i & 1)
        if req.length_dw > 1:
            for i in range(4):
                mask[n - 4 + i] = bool(req.last_be >> i & 1)
        self.memory.write(req.addr, req.data, mask)

    # --- reads ----------------------------------------------------------------------------
    def _cuts(self, start: int, end: int) -> list[int]:
        """Completion end addresses for the bytes [start, end)."""
        cuts = []
        pos = start
        while pos < end:
            # Every completion but the last must end on an RCB; none may carry more than
            # Max_Payload_Size bytes, counted in whole DWs from the DW holding its first byte.
            limit = (pos & ~3) + self.max_payload
            candidates = []
            b = (pos // self.rcb + 1) * self.rcb
            while b < end and b <= limit:
                candidates.append(b)
                b += self.rcb
            if end <= limit:
                candidates.append(end)
            if not candidates:
                raise AssertionError("max_payload smaller than RCB")
            if self.split == "max":
                nxt = candidates[-1]
            elif self.split == "rcb":
                nxt = candidates[0]
            else:
                nxt = self.rng.choice(candidates)
            cuts.append(nxt)
            pos = nxt
        return cuts

    def read(self, req: MemRequest, fault: Fault = Fault.NONE,
             fault_at: int | None = None) -> list[Completion]:
        """The completions answering a MemRd, in address order.

        ``fault_at`` chooses which completion the fault hits (default: a random one); for
        UR/CA/CRS the completions before it are delivered and the faulty one (without data)
        ends the request; for LOST the completions from it on are missing.
        """
        self.check(req)
        start, count = request_bytes(req)
        if req.first_be == 0:
            count = 1
        cuts = self._cuts(start, start + count)
        cpls = []
        pos = start
        for end in cuts:
            first_dw = pos & ~3
            last_dw = (end - 1) & ~3
            length_dw = (last_dw - first_dw) // 4 + 1
            data = self.memory.read(first_dw, length_dw * 4)
            cpls.append(Completion(tag=req.tag, requester_id=req.requester_id,
                                   completer_id=self.completer_id, status=STATUS_SC,
                                   byte_count=start + count - pos, lower_address=pos & 0x7F,
                                   length_dw=length_dw, data=data))
            pos = end
        if fault is Fault.NONE:
            return cpls
        at = self.rng.randrange(len(cpls)) if fault_at is None else min(fault_at, len(cpls) - 1)
        log.debug("MemRd tag %d %#x+%d: %s at completion %d of %d", req.tag, start, count,
                  fault.value, at, len(cpls))
        if fault is Fault.POISONED:
            cpls[at].ep = True
        elif fault is Fault.LOST:
            del cpls[at:]
        else:
            status = {Fault.UR: STATUS_UR, Fault.CA: STATUS_CA, Fault.CRS: STATUS_CRS}[fault]
            bad = cpls[at]
            cpls[at:] = [Completion(tag=req.tag, requester_id=req.requester_id,
                                    completer_id=self.completer_id, status=status,
                                    byte_count=bad.byte_count,
                                    lower_address=bad.lower_address, length_dw=0)]
        return cpls
