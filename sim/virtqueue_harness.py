"""Simulation top for the virtqueue engine: the engine, the RTL test backend, and taps.

Not synthesizable product code: it exists so that cocotb tests and the benchmark can drive
:class:`~hdl.virtio.virtqueue_engine.VirtqueueEngine` through its ports. The engine's DMA
ports are brought out unchanged (``ring_rd``, ``desc_rd``, ``ctl_wr``), plus the test
backend's write channel (``be_wr``). ``backend_sel`` chooses who serves the backend port:
0 = the testbench, through ``elem`` / ``done`` (a Python backend); 1 = the
:class:`~hdl.virtio.test_backend.TestBackend`. Whoever serves it, ``elem_mon`` and
``done_mon`` show every beat that crosses the engine's backend port (taps: their
``valid`` marks a transfer, their ``ready`` is ignored).
"""

from amaranth.hdl import Module, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma_port import ReadChannelSignature, WriteChannelSignature
from hdl.virtio.test_backend import TestBackend
from hdl.virtio.virtqueue_engine import VirtqueueEngine
from hdl.virtio.virtqueue_port import QUEUE_BITS, VirtqConfig, VirtqElemDesc, VirtqElemDone, \
    VirtqError, VirtqFeatures, VirtqStats

__all__ = ["VirtqueueHarness"]


class VirtqueueHarness(wiring.Component):
    """:class:`VirtqueueEngine` with a selectable backend and monitor taps.

    Parameters
    ----------
    engine : dict
        Keyword arguments of :class:`VirtqueueEngine`.
    backend : dict
        Keyword arguments of :class:`TestBackend` other than ``seq_width`` and ``width``.
    """

    def __init__(self, *, engine: dict | None = None, backend: dict | None = None):
        self.engine = VirtqueueEngine(**(engine or {}))
        e = self.engine
        self.backend = TestBackend(seq_width=e.seq_width, width=e.data_width,
                                   **(backend or {}))
        sw, w = e.seq_width, e.data_width
        super().__init__({
            "queue_config": In(data.ArrayLayout(VirtqConfig, e.num_queues)),
            "features": In(VirtqFeatures),
            "driver_ok": In(1),
            "doorbell": In(stream.Signature(16)),
            "reset": In(1),
            "idle": Out(1),
            "needs_reset": Out(1),
            "error": Out(VirtqError),
            "notify": Out(stream.Signature(QUEUE_BITS)),
            "backend_sel": In(1),
            "elem": Out(stream.Signature(VirtqElemDesc(sw))),
            "done": In(stream.Signature(VirtqElemDone(sw))),
            "elem_mon": Out(stream.Signature(VirtqElemDesc(sw))),
            "done_mon": Out(stream.Signature(VirtqElemDone(sw))),
            "ring_rd": Out(ReadChannelSignature(w)),
            "desc_rd": Out(ReadChannelSignature(w)),
            "ctl_wr": Out(WriteChannelSignature(w)),
            "be_wr": Out(WriteChannelSignature(w)),
            "be_reset": In(1),
            "be_idle": Out(1),
            "stats": Out(VirtqStats),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = e = self.engine
        m.submodules.backend = be = self.backend
        m.d.comb += [
            e.queue_config.eq(self.queue_config),
            e.features.eq(self.features),
            e.driver_ok.eq(self.driver_ok),
            e.reset.eq(self.reset),
            self.idle.eq(e.idle),
            self.needs_reset.eq(e.needs_reset),
            self.error.eq(e.error),
            self.stats.eq(e.stats),
            be.reset.eq(self.be_reset),
            self.be_idle.eq(be.idle),
        ]
        wiring.connect(m, wiring.flipped(self.doorbell), e.doorbell)
        wiring.connect(m, wiring.flipped(self.notify), e.notify)
        wiring.connect(m, wiring.flipped(self.ring_rd), e.ring_rd)
        wiring.connect(m, wiring.flipped(self.desc_rd), e.desc_rd)
        wiring.connect(m, wiring.flipped(self.ctl_wr), e.ctl_wr)
        wiring.connect(m, wiring.flipped(self.be_wr), be.wr)

        sel = self.backend_sel
        m.d.comb += [
            self.elem.payload.eq(e.elem.payload),
            be.elem.payload.eq(e.elem.payload),
            self.elem.valid.eq(e.elem.valid & ~sel),
            be.elem.valid.eq(e.elem.valid & sel),
            e.elem.ready.eq(Mux(sel, be.elem.ready, self.elem.ready)),
            e.done.payload.eq(Mux(sel, be.done.payload.as_value(),
                                  self.done.payload.as_value())),
            e.done.valid.eq(Mux(sel, be.done.valid, self.done.valid)),
            be.done.ready.eq(sel & e.done.ready),
            self.done.ready.eq(~sel & e.done.ready),
            self.elem_mon.valid.eq(e.elem.valid & e.elem.ready),
            self.elem_mon.payload.eq(e.elem.payload),
            self.done_mon.valid.eq(e.done.valid & e.done.ready),
            self.done_mon.payload.eq(e.done.payload),
        ]
        return m
