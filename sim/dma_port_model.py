"""A cocotb model of the DMA requester's client ports, serving host memory.

:class:`DmaPortModel` stands in for the DMA engine (``hdl/pcie/dma_port.py``) in front of any
design with read and write channels: it takes their commands, reads and writes a
:class:`~sim.model.memory.GuestMemory`, and answers with the exact beat format of the port
contract (byte-packed from lane 0, ``keep`` and ``error`` on a read's last beat, one ``done``
per write). It adds what a real requester does to a client: latency, back-pressure and gaps
on every stream, and, on request, failed commands (:class:`~hdl.pcie.dma_port.DmaError`).

It also checks the client side of the contract (a write's data has exactly
``ceil(len / bytes per beat)`` beats, ``last`` on the final one; lengths 1..65536; commands
and data stay stable until taken) and raises :class:`DmaProtocolError` otherwise.

Timing model: a read is performed on memory in the cycle its command is taken; a write is
applied in the cycle its last data beat is taken, and its ``done`` follows a few cycles
later. So a read whose command is taken after a write's ``done`` sees that write, as on a
PCIe link where a read request does not pass a posted write.

One coroutine services every channel once per clock: read it after the rising edge (the
values that were present at the edge), then drive the next cycle's outputs. Randomness comes
from the ``random.Random`` given (seed it from cocotb's seed for replayable runs).

Usage::

    dma = DmaPortModel(dut.clk, memory, rng=random.Random(seed))
    dma.add_read_channel(dut, "ring_rd")
    dma.add_write_channel(dut, "ctl_wr")
    cocotb.start_soon(dma.run())
"""
from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from amaranth.lib import data
from cocotb.triggers import RisingEdge

from hdl.pcie.dma_port import (
    MAX_DMA_LEN, DmaError, dma_cmd_layout, read_data_layout, write_data_layout,
    write_done_layout,
)
from sim.model.memory import GuestMemory

__all__ = ["DmaProtocolError", "Timing", "ReadRecord", "WriteRecord", "DmaPortModel",
           "FastSignal", "LayoutCodec", "tlp_count"]

log = logging.getLogger(__name__)

PAGE = 4096


def tlp_count(addr: int, length: int, max_size: int) -> int:
    """Request TLPs a DMA engine needs for ``length`` bytes at ``addr``: pieces of at most
    ``max_size`` bytes (Max_Read_Request_Size for reads, Max_Payload_Size for writes) that
    never cross a 4 KiB boundary (PCIe Base §2.2.7), cut at ``max_size``-aligned addresses."""
    count = 0
    while length > 0:
        chunk = min(length, max_size - addr % max_size, PAGE - addr % PAGE)
        addr += chunk
        length -= chunk
        count += 1
    return count


class DmaProtocolError(AssertionError):
    """The client broke the DMA port contract."""


@dataclass
class Timing:
    """Randomized behaviour of one channel. Probabilities are per cycle."""
    latency: tuple[int, int] = (2, 12)      # cycles from a command taken to its first beat /
                                            # from a write's last beat to its done
    cmd_ready: float = 0.8                  # probability the command stream is ready
    data_valid: float = 0.85                # read data: probability a due beat is offered
    data_ready: float = 0.85                # write data: probability of ready
    max_outstanding: int = 16               # commands taken and not finished

    @classmethod
    def ideal(cls, latency: int = 1) -> Timing:
        """No back-pressure, no gaps, fixed latency."""
        return cls(latency=(latency, latency), cmd_ready=1.0, data_valid=1.0,
                   data_ready=1.0, max_outstanding=64)


@dataclass(slots=True)
class ReadRecord:
    """One read command as served: ``data`` is what memory held when it was taken (cycle
    ``cycle``); ``finished_cycle`` is when its last beat was taken (None until then)."""
    channel: str
    addr: int
    length: int
    cycle: int
    data: bytes
    error: DmaError
    finished_cycle: int | None = None


@dataclass(slots=True)
class WriteRecord:
    """One write command: ``cycle`` when it was applied, ``done_cycle`` when its done was
    taken (None until then)."""
    channel: str
    addr: int
    data: bytes
    cycle: int
    error: DmaError
    done_cycle: int | None = None


class LayoutCodec:
    """:func:`sim.layout.pack` / :func:`~sim.layout.unpack` for one flat layout, with the
    field offsets worked out once (those functions walk the Amaranth layout every call,
    which is most of a per-cycle model's time). Fields of nested layouts come out as
    integers."""
    __slots__ = ("fields",)

    def __init__(self, layout):
        self.fields = tuple((name, field.offset, (1 << field.width) - 1)
                            for name, field in data.Layout.cast(layout))

    def pack(self, values: dict) -> int:
        word = 0
        for name, offset, mask in self.fields:
            value = values.get(name)
            if value:
                word |= (int(value) & mask) << offset
        return word

    def unpack(self, word: int) -> dict:
        return {name: (word >> offset) & mask for name, offset, mask in self.fields}


_CMD = LayoutCodec(dma_cmd_layout)


class FastSignal:
    """Integer access to one DUT signal, cheaper than ``handle.value``.

    A model that looks at dozens of signals every clock spends most of its time building
    ``LogicArray`` objects; this reads the simulator's integer (Verilator is two-state, so
    there is no X or Z to lose) and writes only when the value changes. Every write to the
    signal must then go through :meth:`set`.
    """
    __slots__ = ("handle", "get", "last")

    def __init__(self, handle):
        self.handle = handle
        width = len(handle)
        raw = handle._handle
        if width <= 32:
            mask = (1 << width) - 1
            read = raw.get_signal_val_long
            self.get = lambda: read() & mask
        else:
            read = raw.get_signal_val_binstr
            self.get = lambda: int(read(), 2)
        self.last = None

    def set(self, value: int) -> None:
        if value != self.last:
            self.last = value
            self.handle.value = value


def _check_offer(name: str, stream, valid: int, offered: int | None) -> int | None:
    """A command once offered stays offered, unchanged, until taken."""
    if not valid:
        if offered is not None:
            raise DmaProtocolError(f"{name}: command withdrawn before it was taken")
        return None
    payload = stream.payload.get()
    if offered is not None and payload != offered:
        raise DmaProtocolError(f"{name}: command changed while offered")
    return payload


class _Stream:
    """The three signals of one stream on the DUT, found by name prefix."""

    def __init__(self, dut, prefix: str, layout, *, dut_drives: bool):
        self.valid = FastSignal(getattr(dut, f"{prefix}__valid"))
        self.ready = FastSignal(getattr(dut, f"{prefix}__ready"))
        self.payload = FastSignal(getattr(dut, f"{prefix}__payload"))
        self.layout = layout
        if dut_drives:
            self.ready.set(0)
        else:
            self.valid.set(0)
            self.payload.set(0)


@dataclass
class _PendingRead:
    record: ReadRecord
    due: int
    beat: int = 0


@dataclass
class _PendingWrite:
    addr: int
    length: int
    cycle: int
    beats: list = field(default_factory=list)
    error: DmaError = DmaError.NONE


class _ReadChannel:
    def __init__(self, model: DmaPortModel, dut, prefix: str, timing: Timing, width: int):
        self.model = model
        self.name = prefix
        self.timing = timing
        self.width = width
        self.cmd = _Stream(dut, f"{prefix}__cmd", dma_cmd_layout, dut_drives=True)
        self.data = _Stream(dut, f"{prefix}__data", read_data_layout(width), dut_drives=False)
        self.data_layout = LayoutCodec(read_data_layout(width))
        self.pending: deque[_PendingRead] = deque()
        self.cmd_ready = False
        self.offered: int | None = None     # cmd payload seen offered and not yet taken
        self.data_valid = False
        self.commands = 0
        self.bytes = 0

    def step(self, cycle: int, rng: random.Random) -> None:
        model = self.model
        # Transfers at the edge just passed.
        cmd_valid = self.cmd.valid.get()
        if cmd_valid or self.offered is not None:
            self.offered = _check_offer(self.name, self.cmd, cmd_valid, self.offered)
        if cmd_valid and self.cmd_ready:
            cmd = _CMD.unpack(self.offered)
            self.offered = None
            self._take(cmd["addr"], cmd["len"], cycle, rng)
        if self.data_valid and self.data.ready.get():
            head = self.pending[0]
            head.beat += 1
            if head.beat * self.width // 8 >= head.record.length:
                self.pending.popleft()
                head.record.finished_cycle = cycle
                for hook in model.read_done_hooks:
                    hook(head.record)
            self.data_valid = False
        # Outputs for the next cycle.
        timing = self.timing
        self.cmd_ready = (len(self.pending) < timing.max_outstanding
                          and (timing.cmd_ready >= 1.0 or rng.random() < timing.cmd_ready))
        self.cmd.ready.set(int(self.cmd_ready))
        if not self.data_valid and self.pending and self.pending[0].due <= cycle and (
                timing.data_valid >= 1.0 or rng.random() < timing.data_valid):
            self.data_valid = True
            self.data.payload.set(self._beat(self.pending[0]))
        self.data.valid.set(int(self.data_valid))

    def _take(self, addr: int, length: int, cycle: int, rng: random.Random) -> None:
        if not 1 <= length <= MAX_DMA_LEN:
            raise DmaProtocolError(f"{self.name}: read of {length} bytes at {addr:#x}")
        error = self.model.error_for(self.name, "read", addr, length)
        data = bytes(length) if error != DmaError.NONE else self.model.mem.read(addr, length)
        record = ReadRecord(self.name, addr, length, cycle, data, error)
        self.commands += 1
        self.bytes += length
        self.model.reads.append(record)
        for hook in self.model.read_hooks:
            hook(record)
        low, high = self.timing.latency
        self.pending.append(_PendingRead(record, cycle + rng.randint(low, high)))

    def _beat(self, pending: _PendingRead) -> int:
        nbytes = self.width // 8
        start = pending.beat * nbytes
        chunk = pending.record.data[start:start + nbytes]
        last = start + nbytes >= pending.record.length
        return self.data_layout.pack({
            "data": int.from_bytes(chunk, "little"),
            "keep": (1 << len(chunk)) - 1,
            "last": int(last),
            "error": pending.record.error.value if last else 0,
        })

    @property
    def busy(self) -> bool:
        return bool(self.pending)


class _WriteChannel:
    def __init__(self, model: DmaPortModel, dut, prefix: str, timing: Timing, width: int):
        self.model = model
        self.name = prefix
        self.timing = timing
        self.width = width
        self.cmd = _Stream(dut, f"{prefix}__cmd", dma_cmd_layout, dut_drives=True)
        self.data = _Stream(dut, f"{prefix}__data", write_data_layout(width), dut_drives=True)
        self.done = _Stream(dut, f"{prefix}__done", write_done_layout, dut_drives=False)
        self.data_layout = LayoutCodec(write_data_layout(width))
        self.awaiting_data: deque[_PendingWrite] = deque()
        self.awaiting_done: deque[tuple[int, WriteRecord]] = deque()
        self.cmd_ready = False
        self.data_ready = False
        self.done_valid = False
        self.offered: int | None = None
        self.commands = 0
        self.bytes = 0

    def step(self, cycle: int, rng: random.Random) -> None:
        cmd_valid = self.cmd.valid.get()
        if cmd_valid or self.offered is not None:
            self.offered = _check_offer(self.name, self.cmd, cmd_valid, self.offered)
        if cmd_valid and self.cmd_ready:
            cmd = _CMD.unpack(self.offered)
            self.offered = None
            if not 1 <= cmd["len"] <= MAX_DMA_LEN:
                raise DmaProtocolError(f"{self.name}: write of {cmd['len']} bytes")
            self.commands += 1
            self.bytes += cmd["len"]
            self.awaiting_data.append(_PendingWrite(
                cmd["addr"], cmd["len"], cycle,
                error=self.model.error_for(self.name, "write", cmd["addr"], cmd["len"])))
        if self.data_ready and self.data.valid.get():
            beat = self.data_layout.unpack(self.data.payload.get())
            self._beat(beat, cycle, rng)
        if self.done_valid and self.done.ready.get():
            _, record = self.awaiting_done.popleft()
            record.done_cycle = cycle
            for hook in self.model.done_hooks:
                hook(record)
            self.done_valid = False
        # Outputs for the next cycle.
        timing = self.timing
        self.cmd_ready = (len(self.awaiting_data) + len(self.awaiting_done)
                          < timing.max_outstanding) and (
            timing.cmd_ready >= 1.0 or rng.random() < timing.cmd_ready)
        self.cmd.ready.set(int(self.cmd_ready))
        self.data_ready = bool(self.awaiting_data) and (
            timing.data_ready >= 1.0 or rng.random() < timing.data_ready)
        self.data.ready.set(int(self.data_ready))
        if not self.done_valid and self.awaiting_done and self.awaiting_done[0][0] <= cycle:
            self.done.payload.set(self.awaiting_done[0][1].error.value)
            self.done_valid = True
        self.done.valid.set(int(self.done_valid))

    def _beat(self, beat: dict, cycle: int, rng: random.Random) -> None:
        nbytes = self.width // 8
        write = self.awaiting_data[0]
        write.beats.append(beat["data"])
        expected = -(-write.length // nbytes)
        if len(write.beats) < expected:
            if beat["last"]:
                raise DmaProtocolError(f"{self.name}: write of {write.length} bytes at "
                                       f"{write.addr:#x} ended after {len(write.beats)} beats")
            return
        if not beat["last"]:
            raise DmaProtocolError(f"{self.name}: write of {write.length} bytes at "
                                   f"{write.addr:#x} has no last on beat {expected}")
        self.awaiting_data.popleft()
        data = b"".join(b.to_bytes(nbytes, "little") for b in write.beats)[:write.length]
        record = WriteRecord(self.name, write.addr, data, cycle, write.error)
        if write.error == DmaError.NONE:
            self.model.mem.write(write.addr, data)
        self.model.writes.append(record)
        for hook in self.model.write_hooks:
            hook(record)
        low, high = self.timing.latency
        self.awaiting_done.append((cycle + rng.randint(low, high), record))

    @property
    def busy(self) -> bool:
        return bool(self.awaiting_data or self.awaiting_done)


class DmaPortModel:
    """Serves DMA client channels of a DUT from ``mem``.

    Parameters
    ----------
    clk : cocotb handle
        The DUT clock.
    mem : GuestMemory
        Host memory.
    rng : random.Random
        Source of every random decision.
    width : int
        Data width of the channels.

    Attributes
    ----------
    reads, writes : list
        Every :class:`ReadRecord` / :class:`WriteRecord`, in the order served.
    read_hooks, read_done_hooks, write_hooks, done_hooks : list of callables
        Called with each record as a read is taken / its last beat is taken / a write is
        applied / its done is taken.
    error_for : callable
        ``(channel, "read" | "write", addr, length) -> DmaError``; replace it to inject
        failures (default: none fail).
    cycle : int
        Clock edges seen since :meth:`run` started.
    """

    def __init__(self, clk, mem: GuestMemory, *, rng: random.Random, width: int = 64):
        self.clk = clk
        self.mem = mem
        self.rng = rng
        self.width = width
        self.channels: dict[str, _ReadChannel | _WriteChannel] = {}
        self.reads: list[ReadRecord] = []
        self.writes: list[WriteRecord] = []
        self.read_hooks: list[Callable[[ReadRecord], None]] = []
        self.read_done_hooks: list[Callable[[ReadRecord], None]] = []
        self.write_hooks: list[Callable[[WriteRecord], None]] = []
        self.done_hooks: list[Callable[[WriteRecord], None]] = []
        self.cycle_hooks: list[Callable[[int], None]] = []
        self.error_for: Callable[[str, str, int, int], DmaError] = \
            lambda channel, kind, addr, length: DmaError.NONE
        self.cycle = 0
        self.keep_records = True

    def add_read_channel(self, dut, prefix: str, timing: Timing | None = None) -> None:
        """Serve the read channel whose signals are ``{prefix}__cmd__valid`` etc."""
        self.channels[prefix] = _ReadChannel(self, dut, prefix, timing or Timing(),
                                             self.width)

    def add_write_channel(self, dut, prefix: str, timing: Timing | None = None) -> None:
        """Serve the write channel whose signals are ``{prefix}__cmd__valid`` etc."""
        self.channels[prefix] = _WriteChannel(self, dut, prefix, timing or Timing(),
                                              self.width)

    def set_timing(self, timing: Timing, *names: str) -> None:
        for name in names or tuple(self.channels):
            self.channels[name].timing = timing

    def busy(self) -> bool:
        """Whether any command is taken and not finished (data or done still owed)."""
        return any(channel.busy for channel in self.channels.values())

    def commands(self, name: str) -> int:
        return self.channels[name].commands

    async def run(self) -> None:
        """Service every channel on every clock, forever."""
        channels = list(self.channels.values())
        edge = RisingEdge(self.clk)
        rng = self.rng
        while True:
            await edge
            self.cycle += 1
            for channel in channels:
                channel.step(self.cycle, rng)
            for hook in self.cycle_hooks:
                hook(self.cycle)
            if not self.keep_records:
                self.reads.clear()
                self.writes.clear()
