"""Decides what to do with a virtio-blk request from its header and its byte totals."""
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.blk.layouts import LEN_BITS, BlkAction
from hdl.virtio.spec import (
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_REQ_HEADER_BYTES, VirtioBlkReqHeader, VirtioBlkStatus,
    VirtioBlkType,
)

__all__ = ["RequestDecoder", "MAX_CAPACITY"]

MAX_CAPACITY = (1 << 23) - 1
"""Largest capacity in sectors: every data length that passes the range check then fits
the 32-bit used length (virtio 1.2 §2.7.8) and the storage port's ``count``."""


class RequestDecoder(wiring.Component):
    """The checks of ``docs/robustness.md`` ("virtio-blk: bad requests") in hardware.

    Purely combinational. A request is seen as its device-readable byte total *R*, its
    device-writable byte total *W* (both saturating at 2^32) and the 16-byte header
    ``R[0:16]`` (virtio 1.2 §5.2.6); the first rule that applies decides:

    ==================================================  ==========================
    *W* = 0                                             ``NO_STATUS``
    more than the engine's descriptors per request,
    *R* < 16, or the header read failed                 ``STATUS`` IOERR
    ``type`` not IN, OUT, FLUSH or GET_ID               ``STATUS`` UNSUPP
    IN: *R* > 16, data (*W* - 1) not a multiple of
    512, or past ``capacity``                           ``STATUS`` IOERR
    OUT: *W* > 1, data (*R* - 16) not a multiple of
    512, or past ``capacity``                           ``STATUS`` IOERR
    IN / OUT of 0 sectors                               ``STATUS`` OK
    IN / OUT otherwise                                  ``READ`` / ``WRITE``
    FLUSH: *R* > 16 or *W* > 1                          ``STATUS`` IOERR
    FLUSH otherwise                                     ``FLUSH``
    GET_ID: *R* > 16 or *W* - 1 != 20                   ``STATUS`` IOERR
    GET_ID otherwise                                    ``GET_ID``
    ==================================================  ==========================

    "Past capacity" is ``sector + count > capacity`` without wrap-around (§5.2.6.1). The
    ``reserved`` field is ignored, and ``sector`` for FLUSH and GET_ID.

    Parameters
    ----------
    capacity : int
        Disk size in 512-byte sectors, 1 to :data:`MAX_CAPACITY`.

    Attributes
    ----------
    r_len, w_len : In(LEN_BITS)
    too_many : In(1)
        The element had more non-empty descriptors than the engine stores.
    header : In(VirtioBlkReqHeader)
    header_error : In(1)
    action : Out(BlkAction)
    status : Out(VirtioBlkStatus)
        For ``STATUS``; OK otherwise.
    sector : Out(64)
    count : Out(32)
        Sectors of a READ / WRITE.
    data_len : Out(32)
        Bytes of a READ / WRITE (``count * 512``).
    """

    def __init__(self, *, capacity: int):
        if not isinstance(capacity, int) or not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be 1 to {MAX_CAPACITY} sectors, not {capacity!r}")
        self.capacity = capacity
        super().__init__({
            "r_len": In(LEN_BITS),
            "w_len": In(LEN_BITS),
            "too_many": In(1),
            "header": In(VirtioBlkReqHeader),
            "header_error": In(1),
            "action": Out(BlkAction),
            "status": Out(VirtioBlkStatus),
            "sector": Out(64),
            "count": Out(32),
            "data_len": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        hdr = VIRTIO_BLK_REQ_HEADER_BYTES
        r_len, w_len = self.r_len, self.w_len
        type_ = self.header.type
        sector = self.header.sector
        is_in = type_ == VirtioBlkType.IN
        is_out = type_ == VirtioBlkType.OUT
        is_flush = type_ == VirtioBlkType.FLUSH
        is_get_id = type_ == VirtioBlkType.GET_ID

        # IN data is W without its status byte, OUT data is R after the header.
        data = Signal(LEN_BITS)
        with m.If(is_in):
            m.d.comb += data.eq(w_len - 1)
        with m.Else():
            m.d.comb += data.eq(r_len - hdr)
        count = Signal(LEN_BITS - 9)
        m.d.comb += count.eq(data[9:])
        aligned = data[:9] == 0
        # sector + count <= capacity, without wrap-around: sector <= capacity first, then
        # the room left is small enough to compare with count.
        room = Signal(range(self.capacity + 1))
        m.d.comb += room.eq(self.capacity - sector[:room.shape().width])
        in_range = (sector <= self.capacity) & (count <= room)

        m.d.comb += [
            self.sector.eq(sector),
            self.count.eq(count),
            self.data_len.eq(data),
            self.status.eq(VirtioBlkStatus.OK),
        ]

        def status(value):
            m.d.comb += [self.action.eq(BlkAction.STATUS), self.status.eq(value)]

        with m.If(w_len == 0):
            m.d.comb += self.action.eq(BlkAction.NO_STATUS)
        with m.Elif(self.too_many | (r_len < hdr) | self.header_error):
            status(VirtioBlkStatus.IOERR)
        with m.Elif(~(is_in | is_out | is_flush | is_get_id)):
            status(VirtioBlkStatus.UNSUPP)
        with m.Elif(is_in | is_out):
            wrong_direction = Signal()
            m.d.comb += wrong_direction.eq(Mux(is_in, r_len != hdr, w_len != 1))
            with m.If(wrong_direction | ~aligned | ~in_range):
                status(VirtioBlkStatus.IOERR)
            with m.Elif(count == 0):
                status(VirtioBlkStatus.OK)
            with m.Elif(is_in):
                m.d.comb += self.action.eq(BlkAction.READ)
            with m.Else():
                m.d.comb += self.action.eq(BlkAction.WRITE)
        with m.Elif(is_flush):
            with m.If((r_len != hdr) | (w_len != 1)):
                status(VirtioBlkStatus.IOERR)
            with m.Else():
                m.d.comb += self.action.eq(BlkAction.FLUSH)
        with m.Else():
            with m.If((r_len != hdr) | (w_len != VIRTIO_BLK_ID_BYTES + 1)):
                status(VirtioBlkStatus.IOERR)
            with m.Else():
                m.d.comb += self.action.eq(BlkAction.GET_ID)
        return m
