"""cocotb models of a register-bus client and of decoded TLP stream ends.

:class:`RegisterClientModel` serves one register-bus window (``hdl/pcie/register_bus.py``)
from a byte array with a random number of wait cycles per access and records every access,
so a test can check both what the host sees and exactly which DWs and byte enables reached
the client. :class:`TlpStreamSource` / :class:`TlpStreamSink` drive and collect decoded TLP
streams (the function's ``dma_req`` and ``dma_cpl`` ports) with random gaps/back-pressure.

All of them drive their outputs just after a rising clock edge and sample the handshake in
the read-only phase of the same cycle: with Verilator, values read right at the edge already
show that edge's updates, so sampling there misjudges which transfers happened.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import cocotb
from cocotb.queue import Queue
from cocotb.triggers import Event, ReadOnly, RisingEdge

from hdl.pcie.spec import tlp_beat_layout

from .layout import pack, unpack
from .model import tlp as model

__all__ = ["RegisterAccess", "RegisterClientModel", "TlpStreamSource", "TlpStreamSink"]


@dataclass(frozen=True)
class RegisterAccess:
    write: bool
    addr: int       # DW index in the window
    be: int
    data: int       # written data, or the data returned for a read


class RegisterClientModel:
    """A register client backed by ``size`` bytes of memory (all of it read/write).

    Parameters
    ----------
    dut : cocotb handle
    prefix : str
        Port prefix, e.g. ``"regs__common"``.
    clock : cocotb handle
    size : int
        Window size in bytes.
    max_wait : int
        Each access waits a random 0..max_wait extra cycles before ``ack``.
    rng : random.Random
    """

    def __init__(self, dut, prefix: str, clock, size: int, *, max_wait: int = 3,
                 rng: random.Random | None = None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.addr = getattr(dut, f"{prefix}__addr")
        self.write = getattr(dut, f"{prefix}__write")
        self.be = getattr(dut, f"{prefix}__be")
        self.w_data = getattr(dut, f"{prefix}__w_data")
        self.ack = getattr(dut, f"{prefix}__ack")
        self.r_data = getattr(dut, f"{prefix}__r_data")
        self.clock = clock
        self.mem = bytearray(size)
        self.max_wait = max_wait
        self.rng = rng or random.Random(random.getrandbits(32))
        self.accesses: list[RegisterAccess] = []
        self.ack.value = 0
        self.r_data.value = 0
        cocotb.start_soon(self._run())

    def read_dw(self, index: int) -> int:
        return int.from_bytes(self.mem[4 * index:4 * index + 4], "little")

    async def _run(self) -> None:
        # Drive ``ack`` right after the clock edge; look at the request in the read-only
        # phase, where the values are those the next edge will register. While idle, sleep
        # until ``valid`` rises instead of waking every clock.
        respond = None          # read data (or 0 for a write) to acknowledge next cycle
        ack_high = False
        wait = None
        while True:
            if respond is None and not ack_high and not self.valid.value:
                await RisingEdge(self.valid)
                await ReadOnly()
            else:
                await RisingEdge(self.clock)
                ack_high = respond is not None
                self.ack.value = int(ack_high)
                if ack_high:
                    self.r_data.value = respond
                respond = None
                await ReadOnly()
                if ack_high:
                    # The acknowledged access completes at the coming edge; the next request
                    # can only be seen from the following cycle.
                    wait = None
                    continue
            if not self.valid.value:
                wait = None
                continue
            if wait is None:
                wait = self.rng.randint(0, self.max_wait)
            if wait:
                wait -= 1
                continue
            wait = None
            index = int(self.addr.value) % (len(self.mem) // 4)
            be = int(self.be.value)
            if self.write.value:
                data = int(self.w_data.value)
                for i in range(4):
                    if be >> i & 1:
                        self.mem[4 * index + i] = (data >> (8 * i)) & 0xFF
                self.accesses.append(RegisterAccess(True, index, be, data))
                respond = 0
            else:
                respond = self.read_dw(index)
                self.accesses.append(RegisterAccess(False, index, be, respond))


class TlpStreamSource:
    """Drives a decoded TLP stream (``{prefix}__payload/valid/ready``) from a queue."""

    def __init__(self, dut, prefix: str, clock, *, width: int = 64, idle: float = 0.0,
                 rng: random.Random | None = None):
        self.payload = getattr(dut, f"{prefix}__payload")
        self.valid_sig = getattr(dut, f"{prefix}__valid")
        self.ready_sig = getattr(dut, f"{prefix}__ready")
        self.clock = clock
        self.width = width
        self.layout = tlp_beat_layout(width)
        self.idle = idle
        self.rng = rng or random.Random(random.getrandbits(32))
        self.queue: Queue = Queue()
        self._wake = Event()
        self.sent = 0
        self.valid_sig.value = 0
        cocotb.start_soon(self._run())

    def send(self, hdr: dict, payload: list[int] = ()) -> None:
        self.queue.put_nowait(model.decoded_beats(hdr, list(payload), self.width))
        self._wake.set()

    async def _run(self) -> None:
        beats: list[dict] = []
        current = None
        while True:
            await RisingEdge(self.clock)
            if current is None:
                if not beats and not self.queue.empty():
                    beats = self.queue.get_nowait()
                if beats and not (self.idle and self.rng.random() < self.idle):
                    current = beats.pop(0)
            if current is None:
                self.valid_sig.value = 0
                if not beats and self.queue.empty():
                    self._wake.clear()
                    await self._wake.wait()
                continue
            self.payload.value = pack(self.layout, current)
            self.valid_sig.value = 1
            await ReadOnly()
            if self.ready_sig.value:
                if current["last"]:
                    self.sent += 1
                current = None


class TlpStreamSink:
    """Collects decoded TLPs from ``{prefix}__...`` into :attr:`queue` as ``(hdr, payload)``."""

    def __init__(self, dut, prefix: str, clock, *, width: int = 64, backpressure: float = 0.0,
                 rng: random.Random | None = None):
        self.payload = getattr(dut, f"{prefix}__payload")
        self.valid_sig = getattr(dut, f"{prefix}__valid")
        self.ready_sig = getattr(dut, f"{prefix}__ready")
        self.clock = clock
        self.width = width
        self.layout = tlp_beat_layout(width)
        self.backpressure = backpressure
        self.rng = rng or random.Random(random.getrandbits(32))
        self.queue: Queue = Queue()
        self.ready_sig.value = 0
        cocotb.start_soon(self._run())

    async def recv(self) -> tuple[dict, list[int]]:
        return await self.queue.get()

    async def _run(self) -> None:
        beats: list[dict] = []
        while True:
            await RisingEdge(self.clock)
            ready = not (self.backpressure and self.rng.random() < self.backpressure)
            self.ready_sig.value = int(ready)
            await ReadOnly()
            if ready and not self.valid_sig.value and not beats and not self.backpressure:
                # Idle with ready held high: sleep until a TLP starts.
                await RisingEdge(self.valid_sig)
                await ReadOnly()
            if ready and self.valid_sig.value:
                beats.append(unpack(self.layout, int(self.payload.value)))
                if beats[-1]["last"]:
                    self.queue.put_nowait(model.join_decoded_beats(beats, self.width))
                    beats = []
