"""The DMA engine: bus-master reads and writes of host memory for the device's clients."""
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma_port import ReadChannelSignature, WriteChannelSignature
from hdl.pcie.spec import FunctionControl, check_tlp_width, tlp_signature
from hdl.pcie.dma.completion_tracker import CompletionTracker
from hdl.pcie.dma.layouts import DmaStatus, FcCreditLimit
from hdl.pcie.dma.read_channel import ReadChannel
from hdl.pcie.dma.read_requester import ReadRequester
from hdl.pcie.dma.request_arbiter import RequestArbiter
from hdl.pcie.dma.tag_allocator import TagAllocator
from hdl.pcie.dma.write_channel import WriteChannel
from hdl.stream_fifo import FULL_RATE_DEPTH, queue_stream

__all__ = ["DmaEngine"]


class DmaEngine(wiring.Component):
    """Masters host memory for ``read_channels`` + ``write_channels`` clients.

    The client side is the contract of :mod:`hdl.pcie.dma_port`. The PCIe side is two
    decoded TLP streams (:func:`~hdl.pcie.spec.tlp_signature`): ``req`` carries MemRd and
    MemWr requests towards the function's transmit arbiter, ``cpl`` takes the Cpl/CplD
    completions the function's completion router sends to the engine (all completions for
    this function's requester ID: they can only answer the engine's reads). ``docs/dma.md``
    describes the design; in short:

    * reads are cut at Max_Read_Request_Size (capped at a quarter of a channel's completion
      buffer), writes at Max_Payload_Size, both at 4 KiB boundaries (PCIe Base §2.2.7),
      with correct byte enables (§2.2.5), 3 DW headers below 4 GiB, 4 DW above (§2.2.4.1);
    * each MemRd has its own tag (``tags`` of them, tags 32 and up only with Extended Tag
      enabled); completion space is reserved in the issuing channel's buffer before the
      request is sent, so completions are always accepted (as an endpoint's infinite
      completion credits require, §2.6.1); completions split at the Read Completion
      Boundary and reordered across tags land in place; each channel delivers its commands
      in order with several pieces outstanding;
    * UR/CA/CRS status, poisoned data and the completion timeout end a request with an
      error on its channel; a timed-out tag is quarantined for another timeout before it is
      reused, and completions for it (late, unexpected) are discarded and counted;
    * with Bus Master Enable clear nothing starts and the commands end with NO_BUS_MASTER;
    * posted and non-posted credits from ``credits`` gate every TLP (§2.6.1.2).

    After reset the engine is idle with no tag outstanding; it fills its tag free list in
    ``tags`` clocks before the first read goes out.

    Parameters
    ----------
    read_channels, write_channels : int
        Client channels of each kind, at least 1 each.
    width : int
        Data width in bits of the TLP streams and the clients: 64 or 128.
    tags : int
        MemRd tags, 1..256 (more than 32 are used only with Extended Tag enabled).
    cpl_buffer_bytes : int
        Completion buffer per read channel, a power of two of at least 4096 bytes.
    read_slots : int
        Read pieces outstanding per channel, a power of two 2..256.
    timeout : int
        Completion timeout in clocks (default 1 ms at 125 MHz; PCIe Base §2.8 asks for
        50 us..50 ms by default).

    Attributes
    ----------
    req : Out(tlp_signature(width))
        Outgoing MemRd/MemWr TLPs.
    cpl : In(tlp_signature(width))
        Incoming completions; always ready once the engine is out of reset.
    ctrl : In(FunctionControl)
        requester_id, bus_master_en, max_payload_size, max_read_request_size, ext_tag_en.
    credits : In(FcCreditLimit)
        Posted/non-posted credit limits (see :data:`~hdl.pcie.dma.layouts.FcCreditLimit`).
    status : Out(DmaStatus)
        Discarded completions, timeouts and completion errors (wrapping counters).
    pending : Out(1)
        A MemRd is outstanding (its tag not yet free again): the function's Device Status
        Transactions Pending bit (PCIe Base §7.5.3.5).
    rd : In(ReadChannelSignature(width)).array(read_channels)
    wr : In(WriteChannelSignature(width)).array(write_channels)
    """

    def __init__(self, *, read_channels: int = 1, write_channels: int = 1, width: int = 64,
                 tags: int = 32, cpl_buffer_bytes: int = 4096, read_slots: int = 32,
                 timeout: int = 125_000):
        check_tlp_width(width)
        for name, value in (("read_channels", read_channels),
                            ("write_channels", write_channels)):
            if not isinstance(value, int) or not 1 <= value <= 16:
                raise ValueError(f"{name} must be an integer 1..16, not {value!r}")
        if not isinstance(tags, int) or not 1 <= tags <= 256:
            raise ValueError(f"tags must be an integer 1..256, not {tags!r}")
        if (not isinstance(cpl_buffer_bytes, int) or cpl_buffer_bytes < 4096 or
                cpl_buffer_bytes & (cpl_buffer_bytes - 1)):
            raise ValueError(f"cpl_buffer_bytes must be a power of two of at least 4096 "
                             f"(one 4 KiB read), not {cpl_buffer_bytes!r}")
        if not isinstance(read_slots, int) or not 2 <= read_slots <= 256 or \
                read_slots & (read_slots - 1):
            raise ValueError(f"read_slots must be a power of two 2..256, not {read_slots!r}")
        if not isinstance(timeout, int) or timeout < 4 * tags:
            raise ValueError(f"timeout must be an integer of at least 4 * tags = {4 * tags} "
                             f"clocks, not {timeout!r}")
        self.read_channels = read_channels
        self.write_channels = write_channels
        self.width = width
        self.tags = tags
        self.cpl_buffer_bytes = cpl_buffer_bytes
        self.read_slots = read_slots
        self.timeout = timeout
        self.ring_beats = cpl_buffer_bytes // (width // 8)
        # Pieces of at most a quarter of the buffer keep at least four reads in flight.
        self.max_read = min(4096, cpl_buffer_bytes // 4)
        super().__init__({
            "req": Out(tlp_signature(width)),
            "cpl": In(tlp_signature(width)),
            "ctrl": In(FunctionControl),
            "credits": In(FcCreditLimit),
            "status": Out(DmaStatus),
            "pending": Out(1),
            "rd": In(ReadChannelSignature(width)).array(read_channels),
            "wr": In(WriteChannelSignature(width)).array(write_channels),
        })

    def elaborate(self, platform):
        m = Module()
        ctrl = self.ctrl

        m.submodules.tags = tags = TagAllocator(tags=self.tags)
        m.submodules.tracker = tracker = CompletionTracker(
            width=self.width, channels=self.read_channels, tags=self.tags,
            ring_beats=self.ring_beats, slots=self.read_slots, timeout=self.timeout)
        m.submodules.requester = requester = ReadRequester(
            width=self.width, channels=self.read_channels, ring_beats=self.ring_beats,
            slots=self.read_slots)
        m.submodules.arbiter = arbiter = RequestArbiter(
            sources=1 + self.write_channels, width=self.width)

        m.d.comb += [
            tags.ext_tag_en.eq(ctrl.ext_tag_en),
            requester.bme.eq(ctrl.bus_master_en),
            requester.requester_id.eq(ctrl.requester_id),
            arbiter.bme.eq(ctrl.bus_master_en),
            arbiter.credits.eq(self.credits),
            self.status.eq(tracker.status),
            self.pending.eq(tags.pending),
        ]
        wiring.connect(m, tags.alloc, requester.alloc)
        wiring.connect(m, tracker.free, tags.free)
        wiring.connect(m, requester.issue, tracker.issue)
        wiring.connect(m, requester.refuse, tracker.refuse)
        wiring.connect(m, wiring.flipped(self.cpl), tracker.cpl)
        # Every source reaches the arbiter through a short queue (the write channels hold
        # theirs), so that the arbiter's choice (credits, round robin, the beat multiplexer)
        # starts from registers and not from the sources' own logic (the write aligners, the
        # tag free list).
        m.submodules.requester_q = queue_stream(m, requester.tlp, arbiter.src[0],
                                                depth=FULL_RATE_DEPTH)
        wiring.connect(m, arbiter.out, wiring.flipped(self.req))

        for i in range(self.read_channels):
            chan = ReadChannel(width=self.width, index=i, channels=self.read_channels,
                               ring_beats=self.ring_beats, slots=self.read_slots,
                               max_read=self.max_read)
            m.submodules[f"rd{i}"] = chan
            wiring.connect(m, wiring.flipped(self.rd[i].cmd), chan.client.cmd)
            # The client's read data leaves through a queue too: the aligner's output is
            # computed from the completion buffer's read port in the same clock.
            m.submodules[f"rd{i}_q"] = queue_stream(m, chan.client.data, self.rd[i].data,
                                                   depth=FULL_RATE_DEPTH)
            # Pieces reach the requester through a queue: its choice of the next piece
            # depends on the tag free list and the tracker's refusals, which must not chain
            # into the channel's planning.
            m.submodules[f"sub{i}_q"] = queue_stream(m, chan.sub, requester.sub[i],
                                                    depth=FULL_RATE_DEPTH)
            m.d.comb += [
                chan.mrrs.eq(ctrl.max_read_request_size),
                chan.ring_wr.eq(tracker.ring_wr),
                chan.slot_done.eq(tracker.slot_done),
            ]

        for j in range(self.write_channels):
            chan = WriteChannel(width=self.width)
            m.submodules[f"wr{j}"] = chan
            wiring.connect(m, wiring.flipped(self.wr[j]), chan.client)
            wiring.connect(m, chan.tlp, arbiter.src[1 + j])     # queued in the channel
            m.d.comb += [
                chan.mps.eq(ctrl.max_payload_size),
                chan.bme.eq(ctrl.bus_master_en),
                chan.requester_id.eq(ctrl.requester_id),
            ]
        return m
