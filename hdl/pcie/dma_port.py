"""The DMA requester's client port: how the virtqueue engine and backends reach host memory.

A *read channel* takes commands ``(addr, len)`` and returns the bytes of each command, in
command order, on its ``data`` stream. A *write channel* takes commands ``(addr, len)``
followed by their bytes on ``data``, and reports each finished command on ``done``. Data on
both is byte-packed from byte lane 0: the byte at ``addr`` is in bits 7:0 of the first beat,
whatever the alignment of ``addr``; every beat but a command's last is full.

Read data: every command yields exactly ``ceil(len / (width // 8))`` beats, the last with
``last`` set and ``keep`` marking its valid bytes (contiguous from lane 0). If any part of the
command failed (:class:`DmaError`), ``error`` is set on its last beat (it is ``NONE`` on every
other beat) and the bytes of that command must not be used: a client acts on read data only
after it has seen the last beat's ``error`` field. Failed parts read as zero. A command
refused for its length (``BAD_LENGTH``: 0, or above ``MAX_DMA_LEN``) yields a single beat with
``keep`` 0, ``last`` set and the error, so that even a zero-length command is answered.

Write data: the client sends exactly ``ceil(len / (width // 8))`` beats per command with
``last`` on the final one (``keep`` is implied by ``len``); the engine takes exactly that many
beats for every command, refused ones included (none for ``len`` 0), and counts beats by
``len`` rather than by ``last``. ``done`` carries one entry per command, in command order,
once all its TLPs have left the engine towards the transmit arbiter (writes are posted:
``done`` means sent, not acknowledged) or once the command was refused.
"""
from amaranth.hdl import unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["DmaError", "MAX_DMA_LEN", "dma_cmd_layout", "read_data_layout",
           "write_data_layout", "write_done_layout", "ReadChannelSignature",
           "WriteChannelSignature"]

MAX_DMA_LEN = 65536
"""Largest byte length of a single DMA command."""


class DmaError(enum.Enum, shape=3):
    """Why a DMA command failed (PCIe Base §2.2.9 completion status, §2.8 completion timeout)."""
    NONE = 0
    UR = 1              # completion status Unsupported Request
    CA = 2              # completion status Completer Abort
    CRS = 3             # completion status Configuration Request Retry (not valid for memory)
    POISONED = 4        # completion with EP set
    TIMEOUT = 5         # no (or incomplete) completion within the timeout
    NO_BUS_MASTER = 6   # Bus Master Enable clear: nothing was issued
    BAD_LENGTH = 7      # len of 0 or above MAX_DMA_LEN: nothing was issued


# Byte lengths are 1..MAX_DMA_LEN; the field is wide enough to hold a bad 0 or 65536.
dma_cmd_layout = data.StructLayout({
    "addr": 64,
    "len": range(MAX_DMA_LEN + 1),
})


def read_data_layout(width: int = 64) -> data.StructLayout:
    return data.StructLayout({
        "data": unsigned(width),
        "keep": unsigned(width // 8),
        "last": 1,
        "error": DmaError,
    })


def write_data_layout(width: int = 64) -> data.StructLayout:
    return data.StructLayout({
        "data": unsigned(width),
        "last": 1,
    })


write_done_layout = data.StructLayout({
    "error": DmaError,
})


class ReadChannelSignature(wiring.Signature):
    """A DMA read channel as seen from the client (the client drives ``cmd``)."""

    def __init__(self, width: int = 64):
        self.width = width
        super().__init__({
            "cmd": Out(stream.Signature(dma_cmd_layout)),
            "data": In(stream.Signature(read_data_layout(width))),
        })


class WriteChannelSignature(wiring.Signature):
    """A DMA write channel as seen from the client (the client drives ``cmd`` and ``data``)."""

    def __init__(self, width: int = 64):
        self.width = width
        super().__init__({
            "cmd": Out(stream.Signature(dma_cmd_layout)),
            "data": Out(stream.Signature(write_data_layout(width))),
            "done": In(stream.Signature(write_done_layout)),
        })
