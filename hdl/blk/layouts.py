"""Records exchanged between the blocks of the virtio-blk request engine.

Byte totals of an element's device-readable (*R*) and device-writable (*W*) parts are
:data:`LEN_BITS` wide and saturate at :data:`LEN_SATURATED` (4 GiB): a driver's chain holds
at most 2^32 bytes (virtio 1.2 §2.7.5.2) and anything that long fails the capacity check
(the capacity is below 4 GiB), so a saturated total gives the same outcome as the exact one.
"""
from amaranth.hdl import unsigned
from amaranth.lib import data, enum

from hdl.virtio.spec import VirtioBlkReqHeader, VirtioBlkStatus

__all__ = ["LEN_BITS", "LEN_SATURATED", "BlkAction", "desc_layout", "request_layout",
           "slot_meta_layout", "read_kind_layout", "header_layout", "decision_layout"]

LEN_BITS = 33
LEN_SATURATED = 1 << 32


class BlkAction(enum.Enum, shape=3):
    """What the request engine does with a request once its header is known."""
    NO_STATUS = 0   # no device-writable byte: nothing is executed or written
    STATUS = 1      # only the status byte is written (an error, or IN / OUT of 0 sectors)
    READ = 2        # storage READ, data to W, then the status
    WRITE = 3       # R's data to a storage WRITE, then the status
    FLUSH = 4       # storage FLUSH, then the status
    GET_ID = 5      # the serial to W, then the status


desc_layout = data.StructLayout({
    "addr": unsigned(64),
    "len": unsigned(32),
})
"""A non-empty descriptor as stored per request slot."""


def request_layout(slot_bits: int, max_descriptors: int) -> data.StructLayout:
    """What the element collector hands to the front end, one per element, in order."""
    return data.StructLayout({
        "slot": unsigned(slot_bits),
        "r_len": unsigned(LEN_BITS),
        "w_len": unsigned(LEN_BITS),
        "n_r": range(max_descriptors + 1),      # stored readable descriptors
        "too_many": unsigned(1),                # more than max_descriptors non-empty ones
    })


def slot_meta_layout(seq_width: int, max_descriptors: int) -> data.StructLayout:
    """What the back end needs of a request, stored per slot by the collector."""
    return data.StructLayout({
        "queue": unsigned(4),
        "seq": unsigned(seq_width),
        "head": unsigned(16),
        "status_addr": unsigned(64),            # the last byte of W
        "w_len": unsigned(LEN_BITS),
        "n_r": range(max_descriptors + 1),
        "n_desc": range(max_descriptors + 1),
    })


def read_kind_layout(slot_bits: int) -> data.StructLayout:
    """Who a DMA read command is for, queued when the command is taken."""
    return data.StructLayout({
        "header": unsigned(1),          # 1: header bytes, 0: OUT data
        "last": unsigned(1),            # the header's last command
        "slot": unsigned(slot_bits),
    })


header_layout = data.StructLayout({
    "header": VirtioBlkReqHeader,
    "error": unsigned(1),               # a DMA read of the header failed
})


def decision_layout(slot_bits: int) -> data.StructLayout:
    """The front end tells the back end about requests that need no storage operation."""
    return data.StructLayout({
        "slot": unsigned(slot_bits),
        "action": BlkAction,            # NO_STATUS, STATUS or GET_ID
        "status": VirtioBlkStatus,
    })
