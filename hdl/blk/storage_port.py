"""The storage port: how the virtio-blk request engine reaches the disk behind it.

The request engine (:class:`~hdl.blk.blk_request_engine.BlkRequestEngine`) is the *client*;
a storage backend (the on-chip :class:`~hdl.blk.ram_disk.RamDisk`, later an external-memory
backend such as DDR3) is the *server*. Four streams (``amaranth.lib.stream``) make the port:

``cmd`` (client -> storage): ``{op, tag, sector, count}``
    ``op`` is a :class:`StorageOp`; ``sector`` the first 512-byte sector, ``count`` the
    number of sectors (READ and WRITE only; both 0 for FLUSH). ``tag`` names the command
    until it completes: the client never has two commands with the same tag outstanding.
    A command once offered stays offered, unchanged, until taken. The client issues READ
    and WRITE only inside the capacity (``sector + count <= capacity``) and with
    ``count >= 1``; the storage may assume it.

``wr_data`` (client -> storage): ``{data, last}``
    The bytes of WRITE commands, in the order the commands were taken, exactly
    ``count * 512 / (width / 8)`` beats per command with ``last`` on its final beat. The
    client sends a command's data only after the command has been taken. Byte ``k`` of a
    beat (bits ``8k+7 .. 8k``) is the byte at offset ``k`` of that beat's place on the
    disk: the disk's bytes in order, as in host memory.

``rd_data`` (storage -> client): ``{tag, data, last, error}``
    The data of each READ, as **one burst** of ``count * 512 / (width / 8)`` beats carrying
    its ``tag``, ``last`` on its final beat; bursts are never interleaved, but different
    READs may be answered in any order. ``error`` is meaningful on the last beat only: set,
    the read failed and the client must not use the burst's bytes. A READ has no entry on
    ``done``: its last beat completes it.

``done`` (storage -> client): ``{tag, error}``
    One entry per WRITE and per FLUSH, in any order. A WRITE's entry means its data is
    stored: every READ taken afterwards returns it. A FLUSH's entry means every WRITE taken
    *before the FLUSH command* is durable (as durable as the backend gets; virtio 1.2
    §5.2.6.2: data of completed writes is "committed to non-volatile storage" after a
    completed FLUSH). ``error`` set: the command failed (the sectors of a failed WRITE are
    unspecified, no other sector changed).

Rules that keep the two sides free of deadlock:

* the storage takes ``wr_data`` for every WRITE it has taken without waiting for the
  client to take anything on ``rd_data`` or ``done``; the client takes ``rd_data`` and
  ``done`` without waiting for the storage to take ``cmd`` or ``wr_data``;
* ``rd_data`` and ``done`` for a command come at the earliest in the cycle after its
  command was taken; both may be back-pressured by the client, and ``cmd`` by the storage
  (a storage may, for instance, hold a FLUSH until its earlier writes are done).

Commands that overlap in sectors and are outstanding at the same time complete in an
unspecified order, as requests in flight at the same time do for virtio-blk.

There is no device reset on this port: on a virtio device reset the client stops issuing
commands and drains the port (it sends the data of every WRITE already taken and takes
every burst and ``done``), so a storage backend never sees a command cut short. A storage
component states its size in sectors as the Python attribute ``capacity``.
"""
from amaranth.hdl import unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.virtio.spec import VIRTIO_BLK_SECTOR_BYTES

__all__ = ["StorageOp", "storage_cmd_layout", "storage_wr_layout", "storage_rd_layout",
           "storage_done_layout", "StorageSignature", "beats_per_sector"]


class StorageOp(enum.Enum, shape=2):
    """What a storage command asks for."""
    READ = 0
    WRITE = 1
    FLUSH = 2


def beats_per_sector(width: int) -> int:
    """Beats of ``width`` bits in one 512-byte sector (virtio 1.2 §5.2.6: ``sector`` counts
    512-byte units whatever the block size)."""
    if width % 8 or VIRTIO_BLK_SECTOR_BYTES % (width // 8):
        raise ValueError(f"data width {width} does not divide a {VIRTIO_BLK_SECTOR_BYTES}-byte "
                         f"sector into whole beats")
    return VIRTIO_BLK_SECTOR_BYTES // (width // 8)


def storage_cmd_layout(tag_width: int) -> data.StructLayout:
    return data.StructLayout({
        "op": StorageOp,
        "tag": unsigned(tag_width),
        "sector": unsigned(64),
        "count": unsigned(32),
    })


def storage_wr_layout(width: int) -> data.StructLayout:
    return data.StructLayout({
        "data": unsigned(width),
        "last": unsigned(1),
    })


def storage_rd_layout(width: int, tag_width: int) -> data.StructLayout:
    return data.StructLayout({
        "tag": unsigned(tag_width),
        "data": unsigned(width),
        "last": unsigned(1),
        "error": unsigned(1),
    })


def storage_done_layout(tag_width: int) -> data.StructLayout:
    return data.StructLayout({
        "tag": unsigned(tag_width),
        "error": unsigned(1),
    })


class StorageSignature(wiring.Signature):
    """A storage port as seen from the client (the request engine drives ``cmd`` and
    ``wr_data``); a storage backend has it flipped (``In(StorageSignature(...))``).

    Parameters
    ----------
    width : int
        Data width in bits: a multiple of 8 that divides 512 bytes into whole beats.
    tag_width : int
        Width of the command tags (at least 1).
    """

    def __init__(self, *, width: int = 64, tag_width: int = 4):
        beats_per_sector(width)
        if not isinstance(tag_width, int) or tag_width < 1:
            raise ValueError(f"tag_width must be a positive integer, not {tag_width!r}")
        self.width = width
        self.tag_width = tag_width
        super().__init__({
            "cmd": Out(stream.Signature(storage_cmd_layout(tag_width))),
            "wr_data": Out(stream.Signature(storage_wr_layout(width))),
            "rd_data": In(stream.Signature(storage_rd_layout(width, tag_width))),
            "done": In(stream.Signature(storage_done_layout(tag_width))),
        })

    def __eq__(self, other):
        return (isinstance(other, StorageSignature) and other.width == self.width
                and other.tag_width == self.tag_width)

    def __repr__(self):
        return f"StorageSignature(width={self.width}, tag_width={self.tag_width})"
