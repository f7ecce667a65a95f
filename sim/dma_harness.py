"""cocotb harness for :class:`hdl.pcie.dma.DmaEngine` at the decoded TLP stream level.

One :class:`DmaHarness` drives every port of the engine from a single per-clock loop (which
keeps Verilator runs fast): client read and write channels, the request stream towards the
host, the completion stream back, Function Control and the flow control credit limits. The
host side is :class:`sim.model.pcie_host.PcieHost`; an optional
:class:`sim.model.pcie_link.Wire` pair delays TLPs by their wire time in each direction.

The harness checks what it can check on the fly (request rules via the host model, credits
never exceeded, tags never reused while completions for them may still come, each read
channel's requests covering its commands in order) and :meth:`DmaHarness.check` compares
read data, write results and host memory with the model at the end.
"""
from __future__ import annotations

import collections
import dataclasses
import heapq
import logging
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from hdl.pcie.dma.layouts import DmaStatus, FcCreditLimit
from hdl.pcie.dma_port import DmaError
from hdl.pcie.spec import FunctionControl, TlpFmtType, TlpHeader, tlp_beat_layout
from sim.layout import pack, unpack
from sim.model.pcie_host import (Completion, Fault, HostMemory, MemRequest, PcieHost,
                                 read_byte_count)
from sim.model.pcie_link import Wire

__all__ = ["DmaHarness", "ReadCmd", "WriteCmd", "FAULT_ERROR"]

log = logging.getLogger(__name__)

FAULT_ERROR = {
    Fault.UR: DmaError.UR, Fault.CA: DmaError.CA, Fault.CRS: DmaError.CRS,
    Fault.POISONED: DmaError.POISONED, Fault.LOST: DmaError.TIMEOUT,
}
MAX_DMA_LEN = 65536


@dataclasses.dataclass
class ReadCmd:
    chan: int
    addr: int
    length: int
    expect_bme: bool = True             # Bus Master Enable was set when it was queued
    pieces: list = dataclasses.field(default_factory=list)   # (offset, count, fault)
    data: bytearray = dataclasses.field(default_factory=bytearray)
    error: DmaError | None = None
    beats: int = 0
    t_cmd: int = -1
    t_done: int = -1


@dataclasses.dataclass
class WriteCmd:
    chan: int
    addr: int
    length: int
    payload: bytes
    expect_bme: bool = True
    error: DmaError | None = None
    t_cmd: int = -1
    t_done: int = -1


@dataclasses.dataclass(order=True)
class _PendingCpl:
    ready: float
    seq: int
    cpl: Completion = dataclasses.field(compare=False)
    late: bool = dataclasses.field(compare=False, default=False)
    request: int = dataclasses.field(compare=False, default=0)   # issue order of its MemRd


class _Port:
    """Handles of one stream port, looked up once."""

    def __init__(self, dut, prefix: str):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")


class DmaHarness:
    """Drives a ``DmaEngine`` and serves its requests from a host model.

    Parameters
    ----------
    dut : cocotb handle
    params : dict
        The engine's parameters (``width``, ``read_channels``, ``write_channels``,
        ``timeout``).
    rng : random.Random
    host : PcieHost
        The completer; its ``max_payload`` / ``max_read_request`` follow :meth:`set_ctrl`.
    latency : (int, int)
        Host completion latency range in clocks, drawn per read request.
    p : dict
        Probabilities that a stream moves in a given clock: ``req_ready``, ``cpl_valid``,
        ``rd_cmd``, ``rd_ready``, ``wr_cmd``, ``wr_data``, ``done_ready`` (1.0 = never stalls).
    credits : dict or None
        Credits advertised by the host (``ph``, ``pd``, ``nph``); None for infinite.
    credit_delay : int
        Clocks from the host taking a TLP to its credits coming back (UpdateFC).
    faults : dict
        Fault kind -> probability per MemRd.
    late : float
        Probability that a lost completion comes back late (after the engine's timeout).
    link : (Wire, Wire) or None
        Upstream and downstream wires; None for no wire time.
    tx_buffer : int
        Bytes the transmitter buffers before it back-pressures ``req`` (with a link).
    """

    def __init__(self, dut, params: dict, *, rng: random.Random, host: PcieHost,
                 latency=(20, 200), p: dict | None = None, credits: dict | None = None,
                 credit_delay: int = 10, faults: dict | None = None, late: float = 0.0,
                 link: tuple[Wire, Wire] | None = None, tx_buffer: int = 1024,
                 clock_ns: float = 8.0):
        self.dut = dut
        self.width = params["width"]
        self.B = self.width // 8
        self.lanes = self.width // 32
        self.nrd = params["read_channels"]
        self.nwr = params["write_channels"]
        self.timeout = params["timeout"]
        self.rng = rng
        self.host = host
        self.latency = latency
        self.p = dict(req_ready=1.0, cpl_valid=1.0, rd_cmd=1.0, rd_ready=1.0, wr_cmd=1.0,
                      wr_data=1.0, done_ready=1.0)
        self.p.update(p or {})
        self.credits = credits
        self.credit_delay = credit_delay
        self.faults = faults or {}
        self.late = late
        self.link = link
        self.tx_buffer = tx_buffer
        self.clock_ns = clock_ns

        self.beat_layout = tlp_beat_layout(self.width)
        self._hdr_off = self.beat_layout["hdr"].offset
        self._data_off = self.beat_layout["data"].offset
        self._keep_off = self.beat_layout["keep"].offset
        self._first_off = self.beat_layout["first"].offset
        self._last_off = self.beat_layout["last"].offset

        self.req = _Port(dut, "req")
        self.cpl = _Port(dut, "cpl")
        self.rd_cmd = [_Port(dut, f"rd__{i}__cmd") for i in range(self.nrd)]
        self.rd_data = [_Port(dut, f"rd__{i}__data") for i in range(self.nrd)]
        self.wr_cmd = [_Port(dut, f"wr__{i}__cmd") for i in range(self.nwr)]
        self.wr_data = [_Port(dut, f"wr__{i}__data") for i in range(self.nwr)]
        self.wr_done = [_Port(dut, f"wr__{i}__done") for i in range(self.nwr)]

        self.now = 0
        self.ctrl = dict(requester_id=0x0100, memory_space_en=1, bus_master_en=1,
                         max_payload_size=0, max_read_request_size=2, ext_tag_en=0)
        # client queues
        self.rd_queue = [collections.deque() for _ in range(self.nrd)]
        self.rd_wait = [collections.deque() for _ in range(self.nrd)]   # taken, data pending
        self.rd_cursor = [collections.deque() for _ in range(self.nrd)]  # [cmd, offset]
        self.rd_done: list[ReadCmd] = []
        self.wr_queue = [collections.deque() for _ in range(self.nwr)]
        self.wr_beats = [collections.deque() for _ in range(self.nwr)]
        self.wr_wait = [collections.deque() for _ in range(self.nwr)]
        self.wr_done_list: list[WriteCmd] = []
        self.rd_cmd_cur = [None] * self.nrd
        self.wr_cmd_cur = [None] * self.nwr
        self.wr_beat_cur = [None] * self.nwr
        self.rd_beat_buf = [bytearray() for _ in range(self.nrd)]
        # host side
        self.req_beats: list[int] = []
        self.upstream: list[tuple[float, int, object]] = []   # (arrival, seq, request)
        self.upstream_bytes = 0
        self.pending: list[_PendingCpl] = []                  # heap by ready time
        self.on_wire: collections.deque = collections.deque()  # (arrival, beats)
        self.deliver: collections.deque = collections.deque()  # beats for cpl
        self.cpl_cur = None
        self.seq = 0
        self.tag_busy: dict[int, int] = {}     # tag -> completions not yet delivered
        self.tag_piece: dict[int, tuple] = {}
        self.expect_late = 0
        self.expect_timeouts = 0
        self.expect_cpl_errors = 0
        # credits
        self.limit = dict(ph=0, pd=0, nph=0)
        self.in_flight = dict(ph=0, pd=0, nph=0)
        self.credit_returns: list[tuple[int, int, str, int]] = []
        self.max_in_flight = dict(ph=0, pd=0, nph=0)
        self.req_count = dict(rd=0, wr=0)
        self.ref = HostMemory()          # expected memory contents
        self.last_host_write = 0.0
        self.first_wr_tlp = None
        self._driven: dict[int, int] = {}
        self.mrd_seq = 0
        self.overtaken = 0      # completions that passed an older request's completions
        self.split_reads = 0    # reads answered by more than one completion

    # --- setup ---------------------------------------------------------------------------
    async def start(self, clock: bool = True):
        """Start the clock (unless another harness already did) and reset the engine."""
        if clock:
            cocotb.start_soon(Clock(self.dut.clk, self.clock_ns, unit="ns").start())
        self.dut.rst.value = 1
        for port in (self.req,):
            port.ready.value = 0
        self.cpl.valid.value = 0
        for port in self.rd_cmd + self.wr_cmd + self.wr_data:
            port.valid.value = 0
        for port in self.rd_data + self.wr_done:
            port.ready.value = 0
        if self.credits:
            self.limit = dict(self.credits)
        self._drive_ctrl()
        self._drive_credits()
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0

    def set_ctrl(self, **fields):
        """Change Function Control (as the host writing config space would)."""
        self.ctrl.update(fields)
        self.host.max_payload = 128 << self.ctrl["max_payload_size"]
        self.host.max_read_request = 128 << self.ctrl["max_read_request_size"]
        self._drive_ctrl()

    def _drive_ctrl(self):
        self.host.max_payload = 128 << self.ctrl["max_payload_size"]
        self.host.max_read_request = 128 << self.ctrl["max_read_request_size"]
        self.dut.ctrl.value = pack(FunctionControl, self.ctrl)

    def _drive_credits(self):
        if self.credits is None:
            value = dict(ph_inf=1, pd_inf=1, nph_inf=1, npd_inf=1, valid=1)
        else:
            value = dict(ph=self.limit["ph"] % 256, pd=self.limit["pd"] % 4096,
                         nph=self.limit["nph"] % 256, npd=0, valid=1)
        self.dut.credits.value = pack(FcCreditLimit, value)

    # --- client commands -------------------------------------------------------------------
    def read(self, chan: int, addr: int, length: int) -> ReadCmd:
        cmd = ReadCmd(chan, addr, length, expect_bme=bool(self.ctrl["bus_master_en"]))
        self.rd_queue[chan].append(cmd)
        return cmd

    def write(self, chan: int, addr: int, payload: bytes, length: int | None = None
              ) -> WriteCmd:
        length = len(payload) if length is None else length
        cmd = WriteCmd(chan, addr, length, payload,
                       expect_bme=bool(self.ctrl["bus_master_en"]))
        self.wr_queue[chan].append(cmd)
        return cmd

    def busy(self) -> bool:
        return (any(self.rd_queue) or any(self.rd_wait) or any(self.wr_queue) or
                any(self.wr_wait) or any(self.wr_beats) or
                any(c is not None for c in self.rd_cmd_cur + self.wr_cmd_cur) or
                bool(self.upstream) or any(not p.late for p in self.pending) or
                bool(self.on_wire) or bool(self.deliver) or self.cpl_cur is not None or
                bool(self.req_beats))

    async def run(self, max_cycles: int = 1_000_000, until_idle: bool = True,
                  cycles: int | None = None):
        """Run until every command has finished (or for ``cycles`` clocks)."""
        start = self.now
        while True:
            if cycles is not None and self.now - start >= cycles:
                return
            if cycles is None and until_idle and not self.busy():
                return
            if self.now - start > max_cycles:
                raise AssertionError(f"engine still busy after {max_cycles} clocks: "
                                     f"{self._busy_summary()}")
            await self.step()

    def _busy_summary(self) -> str:
        return (f"rd_queue={[len(q) for q in self.rd_queue]} "
                f"rd_wait={[len(q) for q in self.rd_wait]} "
                f"wr_queue={[len(q) for q in self.wr_queue]} "
                f"wr_wait={[len(q) for q in self.wr_wait]} upstream={len(self.upstream)} "
                f"pending={len(self.pending)} deliver={len(self.deliver)}")

    # --- one clock -----------------------------------------------------------------------
    def _set(self, handle, value):
        """Drive ``handle`` only when its value changes (each write costs simulator time)."""
        key = id(handle)
        if self._driven.get(key) != value:
            handle.value = value
            self._driven[key] = value

    def _was(self, handle) -> int:
        """The value this harness drove onto ``handle`` for the clock edge just passed."""
        return self._driven.get(id(handle), 0)

    async def step(self):
        await RisingEdge(self.dut.clk)
        self.now += 1
        now = self.now
        rnd = self.rng.random

        # transfers that happened at this edge
        if self._was(self.req.ready) and self.req.valid.value:
            self._req_beat(int(self.req.payload.value))
        if self.cpl_cur is not None and self._was(self.cpl.valid) and self.cpl.ready.value:
            self.cpl_cur = None
        for i in range(self.nrd):
            if self.rd_cmd_cur[i] is not None and self._was(self.rd_cmd[i].valid) and \
                    self.rd_cmd[i].ready.value:
                cmd = self.rd_cmd_cur[i]
                cmd.t_cmd = now
                self.rd_wait[i].append(cmd)
                if 1 <= cmd.length <= MAX_DMA_LEN and cmd.expect_bme:
                    self.rd_cursor[i].append([cmd, 0])
                self.rd_cmd_cur[i] = None
            if self._was(self.rd_data[i].ready) and self.rd_data[i].valid.value:
                self._rd_beat(i, int(self.rd_data[i].payload.value))
        for i in range(self.nwr):
            if self.wr_cmd_cur[i] is not None and self._was(self.wr_cmd[i].valid) and \
                    self.wr_cmd[i].ready.value:
                cmd = self.wr_cmd_cur[i]
                cmd.t_cmd = now
                self.wr_wait[i].append(cmd)
                self.wr_cmd_cur[i] = None
            if self.wr_beat_cur[i] is not None and self._was(self.wr_data[i].valid) and \
                    self.wr_data[i].ready.value:
                self.wr_beat_cur[i] = None
            if self._was(self.wr_done[i].ready) and self.wr_done[i].valid.value:
                cmd = self.wr_wait[i].popleft()
                cmd.error = DmaError(int(self.wr_done[i].payload.value))
                cmd.t_done = now
                self.wr_done_list.append(cmd)

        self._host(now)

        # drive the next clock
        if self.link is not None:
            ready = self.upstream_bytes < self.tx_buffer
        else:
            ready = True
        self._set(self.req.ready, int(ready and rnd() < self.p["req_ready"]))

        if self.cpl_cur is None and self.deliver and rnd() < self.p["cpl_valid"]:
            self.cpl_cur = self.deliver.popleft()
            self._set(self.cpl.payload, self.cpl_cur)
            self._set(self.cpl.valid, 1)
        elif self.cpl_cur is None:
            self._set(self.cpl.valid, 0)

        for i in range(self.nrd):
            if self.rd_cmd_cur[i] is None and self.rd_queue[i] and rnd() < self.p["rd_cmd"]:
                cmd = self.rd_cmd_cur[i] = self.rd_queue[i].popleft()
                self._set(self.rd_cmd[i].payload, cmd.addr | (cmd.length << 64))
                self._set(self.rd_cmd[i].valid, 1)
            elif self.rd_cmd_cur[i] is None:
                self._set(self.rd_cmd[i].valid, 0)
            self._set(self.rd_data[i].ready, int(rnd() < self.p["rd_ready"]))
        for i in range(self.nwr):
            if self.wr_cmd_cur[i] is None and self.wr_queue[i] and rnd() < self.p["wr_cmd"]:
                cmd = self.wr_cmd_cur[i] = self.wr_queue[i].popleft()
                self._set(self.wr_cmd[i].payload, cmd.addr | (cmd.length << 64))
                self._set(self.wr_cmd[i].valid, 1)
                nbeats = -(-cmd.length // self.B)
                data = cmd.payload.ljust(nbeats * self.B, b"\0")
                for k in range(nbeats):
                    word = int.from_bytes(data[k * self.B:(k + 1) * self.B], "little")
                    self.wr_beats[i].append(word | (int(k == nbeats - 1) << self.width))
            elif self.wr_cmd_cur[i] is None:
                self._set(self.wr_cmd[i].valid, 0)
            if self.wr_beat_cur[i] is None and self.wr_beats[i] and \
                    rnd() < self.p["wr_data"]:
                self.wr_beat_cur[i] = self.wr_beats[i].popleft()
                self._set(self.wr_data[i].payload, self.wr_beat_cur[i])
                self._set(self.wr_data[i].valid, 1)
            elif self.wr_beat_cur[i] is None:
                self._set(self.wr_data[i].valid, 0)
            self._set(self.wr_done[i].ready, int(rnd() < self.p["done_ready"]))

    # --- client read data ----------------------------------------------------------------
    def _rd_beat(self, chan: int, value: int):
        B = self.B
        data = value & ((1 << self.width) - 1)
        keep = (value >> self.width) & ((1 << B) - 1)
        last = (value >> (self.width + B)) & 1
        error = DmaError((value >> (self.width + B + 1)) & 7)
        if not self.rd_wait[chan]:
            raise AssertionError(f"read channel {chan}: data beat without a command")
        cmd = self.rd_wait[chan][0]
        cmd.beats += 1
        nbytes = bin(keep).count("1")
        if keep != (1 << nbytes) - 1:
            raise AssertionError(f"read channel {chan}: keep {keep:#x} not packed from lane 0")
        if not last and nbytes != B:
            raise AssertionError(f"read channel {chan}: a beat before the last is not full")
        cmd.data += data.to_bytes(B, "little")[:nbytes]
        if last:
            cmd.error = error
            cmd.t_done = self.now
            self.rd_wait[chan].popleft()
            self.rd_done.append(cmd)
        elif error != DmaError.NONE:
            raise AssertionError(f"read channel {chan}: error on a beat that is not the last")

    # --- host side -------------------------------------------------------------------------
    def _req_beat(self, value: int):
        self.req_beats.append(value)
        if len(self.req_beats) == 1 and not self.ctrl["bus_master_en"]:
            raise AssertionError("a request TLP started with Bus Master Enable clear")
        if not (value >> self._last_off) & 1:
            return
        beats, self.req_beats = self.req_beats, []
        first = beats[0]
        if not (first >> self._first_off) & 1:
            raise AssertionError("request TLP without first on its first beat")
        hdr_value = (first >> self._hdr_off) & ((1 << TlpHeader.size) - 1)
        hdr = unpack(TlpHeader, hdr_value)
        for b in beats:
            if (b >> self._hdr_off) & ((1 << TlpHeader.size) - 1) != hdr_value:
                raise AssertionError("request header changed within a TLP")
        fmt_type = TlpFmtType(hdr["fmt_type"])
        length_dw = hdr["length"] or 1024
        write = fmt_type in (TlpFmtType.MWR32, TlpFmtType.MWR64)
        if not write and fmt_type not in (TlpFmtType.MRD32, TlpFmtType.MRD64):
            raise AssertionError(f"unexpected request type {fmt_type}")
        if hdr["requester_id"] != self.ctrl["requester_id"]:
            raise AssertionError(f"requester ID {hdr['requester_id']:#x}, expected "
                                 f"{self.ctrl['requester_id']:#x}")
        payload = bytearray()
        if write:
            for b in beats:
                keep = (b >> self._keep_off) & ((1 << self.lanes) - 1)
                data = (b >> self._data_off) & ((1 << self.width) - 1)
                for lane in range(self.lanes):
                    if keep >> lane & 1:
                        payload += ((data >> (32 * lane)) & 0xFFFFFFFF).to_bytes(4, "little")
            if len(payload) != length_dw * 4:
                raise AssertionError(f"MemWr Length {length_dw} DW with {len(payload)} bytes")
        elif len(beats) != 1 or (beats[0] >> self._keep_off) & ((1 << self.lanes) - 1):
            raise AssertionError("MemRd with payload beats")
        req = MemRequest(write=write, addr=hdr["addr"], length_dw=length_dw,
                         first_be=hdr["first_be"], last_be=hdr["last_be"], tag=hdr["tag"],
                         requester_id=hdr["requester_id"],
                         four_dw=fmt_type in (TlpFmtType.MRD64, TlpFmtType.MWR64),
                         data=bytes(payload))
        self.host.check(req)
        # credits taken by this TLP (§2.6.1): the engine must have had them
        if write:
            need = [("ph", 1), ("pd", -(-length_dw // 4))]
            self.req_count["wr"] += 1
        else:
            need = [("nph", 1)]
            self.req_count["rd"] += 1
            if req.tag >= (256 if self.ctrl["ext_tag_en"] else 32):
                raise AssertionError(f"tag {req.tag} used without Extended Tag")
            if self.tag_busy.get(req.tag):
                raise AssertionError(f"tag {req.tag} reused while completions for it may "
                                     f"still come")
        if self.credits is not None:
            for kind, n in need:
                self.in_flight[kind] += n
                self.max_in_flight[kind] = max(self.max_in_flight[kind], self.in_flight[kind])
                if self.in_flight[kind] > self.credits[kind]:
                    raise AssertionError(f"{kind.upper()} credits exceeded: "
                                         f"{self.in_flight[kind]} > {self.credits[kind]}")
        size = length_dw * 4 if write else 0
        arrival = self.now
        if self.link is not None:
            arrival = self.link[0].send(self.now, size, req.four_dw)
            self.upstream_bytes += size + 20
        self.seq += 1
        heapq.heappush(self.upstream, (arrival, self.seq, (req, need, size)))
        if write and self.first_wr_tlp is None:
            self.first_wr_tlp = self.now

    def _host(self, now: int):
        # requests arriving at the host
        while self.upstream and self.upstream[0][0] <= now:
            _, _, (req, need, size) = heapq.heappop(self.upstream)
            if self.link is not None:
                self.upstream_bytes -= size + 20
            if self.credits is not None:
                self.credit_returns.append((now + self.credit_delay, need))
            if req.write:
                self.host.write(req)
                self.last_host_write = now
            else:
                self._serve_read(req, now)
        # credits coming back (UpdateFC)
        if self.credit_returns and self.credit_returns[0][0] <= now:
            while self.credit_returns and self.credit_returns[0][0] <= now:
                _, need = self.credit_returns.pop(0)
                for kind, n in need:
                    self.in_flight[kind] -= n
                    self.limit[kind] += n
            self._drive_credits()
        # completions onto the downstream wire
        while self.pending and self.pending[0].ready <= now and (
                self.link is None or self.link[1].idle(now)):
            item = heapq.heappop(self.pending)
            c = item.cpl
            if any(p.request < item.request for p in self.pending if not p.late):
                self.overtaken += 1     # an older request still has completions to come
            arrival = now if self.link is None else self.link[1].send(now, c.length_dw * 4)
            self.on_wire.append((arrival, c, item.late))
        while self.on_wire and self.on_wire[0][0] <= now:
            _, c, late = self.on_wire.popleft()
            self.tag_busy[c.tag] -= 1
            self.deliver.extend(self._cpl_beats(c))

    def _serve_read(self, req: MemRequest, now: int):
        fault = Fault.NONE
        r = self.rng.random()
        for kind, prob in self.faults.items():
            if r < prob:
                fault = kind
                break
            r -= prob
        cpls = self.host.read(req, fault)
        if fault is Fault.LOST:
            full = self.host.read(req)
            lost = full[len(cpls):]
            self.expect_timeouts += 1
        else:
            lost = []
        if fault in (Fault.UR, Fault.CA, Fault.CRS, Fault.POISONED):
            self.expect_cpl_errors += 1
        self._attribute(req, fault)
        t = now + self.rng.randint(*self.latency)
        self.mrd_seq += 1
        self.split_reads += len(cpls) > 1
        for c in cpls:
            self.seq += 1
            heapq.heappush(self.pending, _PendingCpl(t, self.seq, c, request=self.mrd_seq))
            # completions of one request stay in address order (§2.3.1.1)
            t += self.rng.randint(0, 4) if self.latency[1] > self.latency[0] else 0
        self.tag_busy[req.tag] = len(cpls)
        if fault is not Fault.NONE:
            log.debug("MemRd tag %d at %#x: %s", req.tag, req.addr, fault.value)
        if lost and self.rng.random() < self.late:
            self.tag_busy[req.tag] += len(lost)
            # after the engine's timeout, within its quarantine of the tag
            late_at = now + self.timeout * 5 // 4
            for c in lost:
                self.seq += 1
                heapq.heappush(self.pending, _PendingCpl(late_at, self.seq, c, late=True))
                self.expect_late += 1

    def _attribute(self, req: MemRequest, fault: Fault):
        """Find the read command this MemRd belongs to: the next bytes of some channel."""
        lo = (req.first_be & -req.first_be).bit_length() - 1
        start = req.addr + lo
        count = read_byte_count(req)
        for cursor in self.rd_cursor:
            if not cursor:
                continue
            cmd, off = cursor[0]
            if cmd.addr + off == start and off + count <= cmd.length:
                cmd.pieces.append((off, count, fault))
                cursor[0][1] += count
                if cursor[0][1] == cmd.length:
                    cursor.popleft()
                return
        raise AssertionError(f"MemRd {start:#x}+{count} is not the next piece of any read "
                             f"channel's oldest command")

    def _cpl_beats(self, c: Completion) -> list[int]:
        hdr = dict(fmt_type=TlpFmtType.CPLD.value if c.length_dw else TlpFmtType.CPL.value,
                   length=c.length_dw % 1024, requester_id=c.requester_id, tag=c.tag,
                   completer_id=c.completer_id, status=c.status, ep=int(c.ep),
                   byte_count=c.byte_count % 4096, lower_address=c.lower_address)
        base = pack(TlpHeader, hdr) << self._hdr_off
        if not c.length_dw:
            return [base | 1 << self._first_off | 1 << self._last_off]
        beats = []
        per = self.lanes * 4
        n = -(-len(c.data) // per)
        for k in range(n):
            chunk = c.data[k * per:(k + 1) * per]
            keep = (1 << (len(chunk) // 4)) - 1
            word = int.from_bytes(chunk, "little")
            beats.append(base | word << self._data_off | keep << self._keep_off |
                         int(k == 0) << self._first_off | int(k == n - 1) << self._last_off)
        return beats

    # --- results -------------------------------------------------------------------------
    def status(self) -> dict:
        return unpack(DmaStatus, int(self.dut.status.value))

    def check(self, memory_windows: bool = True):
        """Compare everything finished so far with the model; raise on any difference."""
        mem = self.host.memory
        for cmd in self.rd_done:
            where = f"read ch{cmd.chan} {cmd.addr:#x}+{cmd.length}"
            if not 1 <= cmd.length <= MAX_DMA_LEN:
                assert cmd.error == DmaError.BAD_LENGTH and cmd.beats == 1 and not cmd.data, \
                    f"{where}: expected one empty BAD_LENGTH beat, got {cmd.error}"
                continue
            assert cmd.beats == -(-cmd.length // self.B), f"{where}: {cmd.beats} beats"
            assert len(cmd.data) == cmd.length
            expect = mem.read(cmd.addr, cmd.length)
            if not cmd.expect_bme:
                assert cmd.error == DmaError.NO_BUS_MASTER, f"{where}: error {cmd.error}"
                assert not any(cmd.data), f"{where}: refused read returned data"
                continue
            assert sum(c for _, c, _ in cmd.pieces) == cmd.length, \
                f"{where}: requests cover {sum(c for _, c, _ in cmd.pieces)} bytes"
            faults = {FAULT_ERROR[f] for _, _, f in cmd.pieces if f is not Fault.NONE}
            if not faults:
                assert cmd.error == DmaError.NONE, f"{where}: unexpected error {cmd.error}"
                if cmd.data != expect:
                    bad = next(i for i in range(cmd.length) if cmd.data[i] != expect[i])
                    raise AssertionError(f"{where}: data differs from byte {bad}")
                continue
            assert cmd.error in faults, f"{where}: error {cmd.error}, injected {faults}"
            for off, count, fault in cmd.pieces:
                part = cmd.data[off:off + count]
                if fault is Fault.NONE:
                    assert part == expect[off:off + count], f"{where}: good part differs"
                else:
                    assert not any(part), f"{where}: failed part not zero"
        for cmd in self.wr_done_list:
            where = f"write ch{cmd.chan} {cmd.addr:#x}+{cmd.length}"
            if not 1 <= cmd.length <= MAX_DMA_LEN:
                assert cmd.error == DmaError.BAD_LENGTH, f"{where}: error {cmd.error}"
            elif not cmd.expect_bme:
                assert cmd.error == DmaError.NO_BUS_MASTER, f"{where}: error {cmd.error}"
            else:
                assert cmd.error == DmaError.NONE, f"{where}: error {cmd.error}"
        if memory_windows:
            for cmd in self.wr_done_list:
                if cmd.error == DmaError.NONE:
                    self.ref.write(cmd.addr, cmd.payload[:cmd.length])
            for cmd in self.wr_done_list:
                lo, hi = cmd.addr - 8, cmd.addr + cmd.length + 8
                got, want = mem.read(lo, hi - lo), self.ref.read(lo, hi - lo)
                if got != want:
                    bad = next(i for i in range(hi - lo) if got[i] != want[i])
                    raise AssertionError(f"write ch{cmd.chan} {cmd.addr:#x}+{cmd.length}: "
                                         f"host memory differs at {lo + bad:#x}")
