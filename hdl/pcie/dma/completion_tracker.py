"""Tag table of the DMA engine: matches completions to MemRd requests, times requests out."""
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma_port import DmaError
from hdl.pcie.spec import CplStatus, TlpFmtType, tlp_signature
from hdl.pcie.dma.layouts import (DmaStatus, issue_layout, refuse_layout, ring_write_layout,
                                  slot_event_layout)

__all__ = ["CompletionTracker"]


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class CompletionTracker(wiring.Component):
    """Remembers every outstanding MemRd by tag and places its completion data.

    For each completion (PCIe Base §2.2.9) whose tag is outstanding, the payload is written
    into the buffer of the read channel that issued the request, at the position given by
    the request's end and the completion's Byte Count (§2.3.1.1: Byte Count is the number of
    bytes still to be returned including this completion, so the first byte of this
    completion is ``len - byte_count`` bytes into the request). Completions of one request
    come in address order (§2.3.1.1); completions of different tags in any order. A request
    ends with its last completion (the one whose payload reaches the end, §2.3.1.1), or with
    any completion of status other than Successful Completion (§2.3.2), or when the
    completion timeout expires (§2.8); then its channel gets a slot event with the outcome
    and the tag goes back to the free list. A timed-out tag is quarantined for a second
    timeout period before it is reused, so a late completion for it is recognised as
    unexpected and discarded (§2.3.2, Unexpected Completion) rather than taken for a newer
    request's data.

    The completion input is always ready: the space for every byte was reserved by the
    channel before the request was issued.

    Parameters
    ----------
    width : int
        TLP stream and buffer width in bits (64 or 128).
    channels : int
        Read channels.
    tags : int
        Tags, 1..256.
    ring_beats : int
        Beats in each channel's completion buffer (a power of two).
    slots : int
        Reorder slots per read channel (a power of two).
    timeout : int
        Completion timeout in clocks; a request is timed out ``timeout`` to
        ``timeout + 2 * tags`` clocks after it was issued (a few clocks more if completions
        end other requests at the moment it is due).

    Attributes
    ----------
    cpl : In(tlp_signature(width))
        Completions routed to the engine.
    issue : In(stream.Signature(issue_layout(...)))
        A MemRd was sent with this tag; always ready.
    refuse : In(stream.Signature(refuse_layout(...)))
        A read piece that was not issued; ends its slot with NO_BUS_MASTER.
    free : Out(stream.Signature(8))
        Tags given back to the allocator, which is always ready while any tag is out.
    ring_wr : Out(ring_write_layout(...))
        Completion data for a channel's buffer, one DW per lane memory.
    slot_done : Out(slot_event_layout(...))
        A read piece ended, with its outcome.
    status : Out(DmaStatus)
        Counters (wrapping).
    """

    def __init__(self, *, width: int, channels: int, tags: int, ring_beats: int, slots: int,
                 timeout: int):
        self.width = width
        self.channels = channels
        self.tags = tags
        self.ring_beats = ring_beats
        self.slots = slots
        self.timeout = timeout
        self.lanes = width // 32
        self.lane_bits = (self.lanes - 1).bit_length()
        self.chan_bits = _bits(channels)
        self.slot_bits = _bits(slots)
        self.ring_bits = _bits(ring_beats)
        self.issue_layout = issue_layout(self.chan_bits, self.slot_bits, self.ring_bits,
                                         self.lane_bits)
        super().__init__({
            "cpl": In(tlp_signature(width)),
            "issue": In(stream.Signature(self.issue_layout)),
            "refuse": In(stream.Signature(refuse_layout(self.chan_bits, self.slot_bits))),
            "free": Out(stream.Signature(8)),
            "ring_wr": Out(ring_write_layout(self.chan_bits, self.lanes, self.ring_bits)),
            "slot_done": Out(slot_event_layout(self.chan_bits, self.slot_bits)),
            "status": Out(DmaStatus),
        })

    def elaborate(self, platform):
        m = Module()
        tags = self.tags
        lanes = self.lanes
        tag_bits = _bits(tags)
        # Time stamps must tell apart every age up to the quarantine end (2 timeouts plus
        # two scans), modulo their width.
        ts_bits = (2 * self.timeout + 4 * tags).bit_length() + 1

        now = Signal(ts_bits)
        m.d.sync += now.eq(now + 1)

        active = Signal(tags)       # MemRd outstanding
        stale = Signal(tags)        # timed out, quarantined
        poison = Signal(tags)       # a poisoned completion arrived for it

        m.submodules.info = info_mem = Memory(shape=self.issue_layout, depth=tags, init=[])
        m.submodules.stamp = stamp_mem = Memory(shape=ts_bits, depth=tags, init=[])
        info_wr = info_mem.write_port()
        stamp_wr = stamp_mem.write_port()
        info_cpl = info_mem.read_port()
        info_scan = info_mem.read_port(transparent_for=(info_wr,))
        stamp_scan = stamp_mem.read_port(transparent_for=(stamp_wr,))

        # --- issue ---------------------------------------------------------------------
        itag = self.issue.payload.tag[:tag_bits]
        m.d.comb += [
            self.issue.ready.eq(1),
            info_wr.addr.eq(itag),
            info_wr.data.eq(self.issue.payload),
            info_wr.en.eq(self.issue.valid),
            stamp_wr.addr.eq(itag),
            stamp_wr.data.eq(now),
            stamp_wr.en.eq(self.issue.valid),
        ]
        with m.If(self.issue.valid):
            m.d.sync += [active.bit_select(itag, 1).eq(1), poison.bit_select(itag, 1).eq(0)]

        # --- completions: stage 0 registers the beat and looks the tag up ----------------
        s1_valid = Signal()
        s1 = Signal.like(self.cpl.payload)
        m.d.comb += [
            self.cpl.ready.eq(1),
            info_cpl.addr.eq(self.cpl.payload.hdr.tag[:tag_bits]),
            info_cpl.en.eq(self.cpl.valid & self.cpl.payload.first),
        ]
        m.d.sync += s1_valid.eq(self.cpl.valid)
        with m.If(self.cpl.valid):
            m.d.sync += s1.eq(self.cpl.payload)

        # --- stage 1: on the first beat decode, on every beat write ----------------------
        hdr = s1.hdr
        info = info_cpl.data
        tag = hdr.tag[:tag_bits]
        in_tlp = Signal()           # between the first and last beat of a completion
        with m.If(s1_valid):
            m.d.sync += in_tlp.eq(~s1.last)

        is_cpl = (hdr.fmt_type == TlpFmtType.CPL) | (hdr.fmt_type == TlpFmtType.CPLD)
        tag_ok = (hdr.tag < tags) & active.bit_select(tag, 1)
        byte_count = Mux(hdr.byte_count == 0, 4096, hdr.byte_count)
        rel = Signal(range(lanes * 4 + 4097))
        m.d.comb += rel.eq(info.end_rel - byte_count)
        len_dw = Mux(hdr.length == 0, 1024, hdr.length)
        final = (hdr.status != CplStatus.SC) | (hdr.lower_address[:2] + byte_count <= len_dw * 4)
        poisoned = hdr.ep | poison.bit_select(tag, 1)
        error = Signal(DmaError)
        with m.Switch(hdr.status):
            with m.Case(CplStatus.SC):
                m.d.comb += error.eq(Mux(poisoned, DmaError.POISONED, DmaError.NONE))
            with m.Case(CplStatus.CA):
                m.d.comb += error.eq(DmaError.CA)
            with m.Case(CplStatus.CRS):
                m.d.comb += error.eq(DmaError.CRS)
            with m.Default():
                # UR, and reserved values, which a requester treats as UR (§2.3.2)
                m.d.comb += error.eq(DmaError.UR)

        # Per-TLP context, taken from the first beat.
        ctx_good = Signal()
        ctx_write = Signal()
        ctx_final = Signal()
        ctx_error = Signal(DmaError)
        ctx_beat = Signal(self.ring_bits)
        ctx_lane0 = Signal(max(1, self.lane_bits))
        ctx_chan = Signal(self.chan_bits)
        ctx_slot = Signal(self.slot_bits)

        dw0 = rel >> 2
        # A completion whose Byte Count and Length put data outside its request (malformed,
        # §2.3.2) is dropped like an unexpected one: it must not touch other requests' room.
        has_data = hdr.fmt_type == TlpFmtType.CPLD
        end_dw = (info.end_rel + 3) >> 2
        fits = (byte_count <= info.end_rel) & (~has_data | (dw0 + len_dw <= end_dw))
        first = s1.first
        accept = is_cpl & tag_ok & fits
        good = Mux(first, accept, ctx_good)
        write = Mux(first, accept & (hdr.status == CplStatus.SC) & ~hdr.ep & has_data,
                    ctx_write)
        fin = Mux(first, final, ctx_final)
        err = Mux(first, error, ctx_error)
        beat = Mux(first, info.ring_base + (dw0 >> self.lane_bits), ctx_beat)
        lane0 = Mux(first, dw0[:max(1, self.lane_bits)] if self.lane_bits else 0, ctx_lane0)
        chan = Mux(first, info.chan, ctx_chan)
        slot = Mux(first, info.slot, ctx_slot)
        with m.If(s1_valid):
            m.d.sync += [
                ctx_good.eq(good), ctx_write.eq(write), ctx_final.eq(fin), ctx_error.eq(err),
                ctx_beat.eq(beat + 1), ctx_lane0.eq(lane0), ctx_chan.eq(chan),
                ctx_slot.eq(slot),
            ]

        # Payload DW j of this beat goes to lane (lane0 + j) mod lanes; lanes below lane0
        # receive DWs that wrap into the next buffer beat.
        m.d.comb += self.ring_wr.chan.eq(chan)
        for t in range(lanes):
            src = Signal(range(lanes), name=f"src{t}")
            m.d.comb += src.eq((t - lane0)[:max(1, self.lane_bits)] if self.lane_bits else 0)
            port = self.ring_wr.lane[t]
            dw = s1.data.word_select(src, 32)
            keep = s1.keep.bit_select(src, 1)
            m.d.comb += [
                port.en.eq(s1_valid & write & keep),
                port.addr.eq(beat + (t < lane0)),
                port.data.eq(dw),
            ]

        end_tlp = s1_valid & s1.last
        retire = Signal()
        m.d.comb += retire.eq(end_tlp & good & fin)
        with m.If(end_tlp & good & ~fin & hdr.ep):
            m.d.sync += poison.bit_select(tag, 1).eq(1)

        cnt_discard = Signal(16)
        cnt_timeout = Signal(16)
        cnt_error = Signal(16)
        m.d.comb += [
            self.status.cpl_discarded.eq(cnt_discard),
            self.status.cpl_timeouts.eq(cnt_timeout),
            self.status.cpl_errors.eq(cnt_error),
        ]
        with m.If(s1_valid & first & ~accept):
            m.d.sync += cnt_discard.eq(cnt_discard + 1)

        # --- timeout scanner: one tag every two clocks -----------------------------------
        idx = Signal(tag_bits)
        phase = Signal()
        m.d.comb += [info_scan.addr.eq(idx), stamp_scan.addr.eq(idx)]
        elapsed = Signal(ts_bits)
        m.d.comb += elapsed.eq(now - stamp_scan.data)
        # A tag whose completion is being received is passed over (it is answering, and
        # its buffer writes must not race a timeout); an action that needs the slot event
        # bus or the free list waits a clock while a completion ends a request.
        busy_here = (s1_valid | in_tlp) & (hdr.tag == idx)
        look = phase & ~busy_here
        want_timeout = look & active.bit_select(idx, 1) & (elapsed >= self.timeout)
        want_release = look & stale.bit_select(idx, 1) & (elapsed >= 2 * self.timeout)
        time_out = Signal()
        release = Signal()
        m.d.comb += [
            time_out.eq(want_timeout & ~retire),
            release.eq(want_release & ~retire),
        ]
        advance = phase & ~((want_timeout | want_release) & retire)
        with m.If(~phase):
            m.d.sync += phase.eq(1)
        with m.Elif(advance):
            m.d.sync += [phase.eq(0), idx.eq(Mux(idx == tags - 1, 0, idx + 1))]
        with m.If(time_out):
            m.d.sync += [
                active.bit_select(idx, 1).eq(0),
                stale.bit_select(idx, 1).eq(1),
                cnt_timeout.eq(cnt_timeout + 1),
            ]
        with m.If(release):
            m.d.sync += stale.bit_select(idx, 1).eq(0)

        # --- outcomes: retire beats timeout beats refusal ---------------------------------
        m.d.comb += self.refuse.ready.eq(~retire & ~time_out)
        with m.If(retire):
            m.d.comb += [
                self.slot_done.valid.eq(1),
                self.slot_done.chan.eq(chan),
                self.slot_done.slot.eq(slot),
                self.slot_done.error.eq(err),
                self.free.valid.eq(1),
                self.free.payload.eq(tag),
            ]
            m.d.sync += active.bit_select(tag, 1).eq(0)
            with m.If(err != DmaError.NONE):
                m.d.sync += cnt_error.eq(cnt_error + 1)
        with m.Elif(time_out):
            m.d.comb += [
                self.slot_done.valid.eq(1),
                self.slot_done.chan.eq(info_scan.data.chan),
                self.slot_done.slot.eq(info_scan.data.slot),
                self.slot_done.error.eq(DmaError.TIMEOUT),
            ]
        with m.Elif(self.refuse.valid):
            m.d.comb += [
                self.slot_done.valid.eq(1),
                self.slot_done.chan.eq(self.refuse.payload.chan),
                self.slot_done.slot.eq(self.refuse.payload.slot),
                self.slot_done.error.eq(DmaError.NO_BUS_MASTER),
            ]
        with m.If(release):
            m.d.comb += [self.free.valid.eq(1), self.free.payload.eq(idx)]
        return m
