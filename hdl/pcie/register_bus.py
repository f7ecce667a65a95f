"""The register bus: how the BAR completer reaches register clients, one DW at a time.

Signature (from the master, the BAR completer, whose side is ``Out``)::

    valid   Out(1)          a request is presented; held, with every field below, until ack
    addr    Out(addr_width) DW index inside the client's window (byte offset >> 2)
    write   Out(1)          1 = write, 0 = read
    be      Out(4)          byte enables: bit i = byte i of the DW (address offset i)
    w_data  Out(32)         write data, host byte order (byte at offset 0 in bits 7:0)
    ack     In(1)           the client finished the request in this cycle
    r_data  In(32)          read data, valid in the cycle ack is high (reads only)

Rules:

* One access completes in every cycle where ``valid`` and ``ack`` are both high. The master
  keeps ``valid`` and all request fields stable until that cycle and may present the next
  request in the following cycle (so a client that drives ``ack = valid`` combinationally
  serves one DW per clock; a client that needs time, such as a device-config window served by
  a backend, holds ``ack`` low for as many cycles as it likes).
* ``ack`` is only meaningful while ``valid`` is high; a client must not acknowledge a request
  that is not presented.
* ``be`` is never zero: the completer skips DWs without enabled bytes. Clients with read side
  effects (such as a read-to-clear ISR byte) must apply them only to enabled bytes; writes
  change only enabled bytes.
* A multi-DW TLP becomes consecutive accesses at increasing ``addr`` in TLP order. Accesses
  never cross a window: a TLP that does is refused by the completer before any access.
* There is no error response: a client answers every address of its window (unimplemented
  registers read 0 and ignore writes).
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisterBus", "RegisterBusStage", "RegisterWindow"]


class RegisterBus:
    """Namespace of the register bus (see the module documentation for the protocol)."""

    class Signature(wiring.Signature):
        """Register bus signature, master side.

        Parameters
        ----------
        addr_width : int
            Width of the DW address inside the window (at least 1).
        """

        def __init__(self, *, addr_width: int):
            if not isinstance(addr_width, int) or addr_width < 1:
                raise TypeError(f"register bus address width must be a positive integer, "
                                f"not {addr_width!r}")
            self.addr_width = addr_width
            super().__init__({
                "valid": Out(1),
                "addr": Out(addr_width),
                "write": Out(1),
                "be": Out(4),
                "w_data": Out(32),
                "ack": In(1),
                "r_data": In(32),
            })

        def __eq__(self, other):
            return isinstance(other, RegisterBus.Signature) and other.addr_width == self.addr_width

        def __repr__(self):
            return f"RegisterBus.Signature(addr_width={self.addr_width})"


@dataclass(frozen=True)
class RegisterWindow:
    """A window of BAR0 served by one register client.

    Parameters
    ----------
    name : str
        Port name of the window (a Python identifier, e.g. ``"common"``).
    offset : int
        Byte offset of the window in BAR0; a multiple of ``size``.
    size : int
        Window size in bytes, a power of two, at least 4.
    """
    name: str
    offset: int
    size: int

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"register window name must be a Python identifier, not {self.name!r}")
        if not isinstance(self.size, int) or self.size < 4 or self.size & (self.size - 1):
            raise ValueError(f"register window {self.name!r}: size {self.size!r} is not a power "
                             f"of two of at least 4 bytes")
        if not isinstance(self.offset, int) or self.offset < 0 or self.offset % self.size:
            raise ValueError(f"register window {self.name!r}: offset {self.offset!r} is not a "
                             f"non-negative multiple of its size {self.size:#x}")

    @property
    def dw_bits(self) -> int:
        """log2 of the window size in DWs."""
        return (self.size // 4).bit_length() - 1

    @property
    def addr_width(self) -> int:
        """Address width of the window's register bus."""
        return max(1, self.dw_bits)

    @property
    def end(self) -> int:
        return self.offset + self.size

    def overlaps(self, other: "RegisterWindow") -> bool:
        return self.offset < other.end and other.offset < self.end


class RegisterBusStage(wiring.Component):
    """A register slice on the register bus: every signal between master and client is
    registered, so no combinational path runs through it in either direction.

    A request seen on ``master`` is copied into registers and presented to ``client`` from
    the next clock; the client's ``ack`` (and ``r_data``) is registered and given back to
    the master a clock after the client gave it. Each access therefore takes two clocks more
    than the client needs, and reaches the client exactly once: the stage takes no new
    request in the clock it acknowledges one (the master still shows the old one then).

    Used in front of clients whose decode is deep (the transport's windows, whose
    arbiters and common configuration registers sit behind the BAR completer's decode);
    register accesses are few, so the extra clocks cost nothing measurable.

    Reset: no access in flight.

    Parameters
    ----------
    addr_width : int
        Address width of the bus.

    Attributes
    ----------
    master : In(RegisterBus.Signature(addr_width))
        From the master (this stage is its client).
    client : Out(RegisterBus.Signature(addr_width))
        Towards the client.
    """

    def __init__(self, *, addr_width: int):
        self.addr_width = addr_width
        super().__init__({
            "master": In(RegisterBus.Signature(addr_width=addr_width)),
            "client": Out(RegisterBus.Signature(addr_width=addr_width)),
        })

    def elaborate(self, platform):
        m = Module()
        up, down = self.master, self.client
        answered = Signal()     # ``up.ack`` is high: the master drops this request next
        with m.If(down.valid):
            with m.If(down.ack):
                m.d.sync += [down.valid.eq(0), answered.eq(1), up.r_data.eq(down.r_data)]
        with m.Elif(answered):
            m.d.sync += answered.eq(0)
        with m.Elif(up.valid):
            m.d.sync += [
                down.valid.eq(1),
                down.addr.eq(up.addr),
                down.write.eq(up.write),
                down.be.eq(up.be),
                down.w_data.eq(up.w_data),
            ]
        m.d.comb += up.ack.eq(answered)
        return m
