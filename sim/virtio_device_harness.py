"""Simulation top for the whole virtio-pci device: the device core, the RTL test backend, taps.

Not product code: it exists so that cocotb tests can drive
:class:`~hdl.virtio.virtio_pci_device.VirtioPciDevice` through a cocotbext-pcie root complex
(raw TLP streams ``rx`` / ``tx``) and see what they cannot see from the link:

* ``done_mon``: every completion the backend hands the engine (queue, seq, head,
  written_len);
* ``wr_cmd_mon``, ``wr_done_mon``, ``rd_cmd_mon``: the engine's control writes (``ctl_wr``
  commands and their ``done``) and its 2-byte control reads (``ring_rd`` commands), each with
  the clock cycle it happened in. A used-buffer notification decision covers the
  ``used->idx`` writes whose ``done`` came before the cycle its read command was taken; the
  link shows the TLPs but not those cycles, so the checker needs them;

every tap goes through a FIFO so that the testbench can sleep while nothing happens;
``overflow`` says if a FIFO ever had to drop an entry (the tests assert it never does);
* ``probe_rd`` / ``probe_wr``: one DMA read and one DMA write channel of the device's own
  DMA engine, driven by the testbench, for end-to-end DMA tests through the real endpoint.
  They are the extra channels of :class:`ProbedBackend`, which wraps the
  :class:`~hdl.virtio.test_device_backend.TestDeviceBackend` and declares one read and two
  write channels to the device core.

The flow-control credit limits of the DMA engine are tied to "infinite": the bridge's
link model enforces the root port's credits on ``tx``.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.bar_completer import BarCounters
from hdl.pcie.dma.layouts import UNLIMITED_CREDITS, DmaStatus
from hdl.pcie.dma_port import ReadChannelSignature, WriteChannelSignature
from hdl.pcie.spec import raw_tlp_signature
from hdl.virtio.device_backend import DeviceBackendSignature
from hdl.virtio.test_device_backend import TestDeviceBackend
from hdl.virtio.virtio_pci_device import VirtioPciDevice, VirtioPciDeviceParams
from hdl.virtio.virtio_pci_transport import TransportCounters
from hdl.virtio.virtqueue_port import VirtqElemDone, VirtqError, VirtqStats

__all__ = ["ProbedBackend", "VirtioDeviceHarness", "WR_CMD_MON", "WR_DONE_MON", "RD_CMD_MON"]

WR_CMD_MON = data.StructLayout({"addr": 64, "len": 17, "cycle": 32})
WR_DONE_MON = data.StructLayout({"cycle": 32})
RD_CMD_MON = data.StructLayout({"addr": 64, "cycle": 32})


class ProbedBackend(wiring.Component):
    """A :class:`TestDeviceBackend` that also lends the device core's DMA engine one read and
    one write channel to the testbench (``probe_rd``, ``probe_wr``)."""
    read_channels = 1
    write_channels = 2
    device_features = TestDeviceBackend.device_features

    def __init__(self, *, seq_width: int, width: int, cfg_addr_width: int, **test_backend):
        self.inner = TestDeviceBackend(seq_width=seq_width, width=width,
                                       cfg_addr_width=cfg_addr_width, **test_backend)
        signature = DeviceBackendSignature(
            seq_width=seq_width, width=width, cfg_addr_width=cfg_addr_width,
            read_channels=self.read_channels, write_channels=self.write_channels)
        super().__init__({
            **signature.members,
            "probe_rd": In(ReadChannelSignature(width)),
            "probe_wr": In(WriteChannelSignature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        for name in ("elem", "cfg"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(inner, name))
        wiring.connect(m, inner.done, wiring.flipped(self.done))
        wiring.connect(m, inner.wr[0], wiring.flipped(self.wr[0]))
        wiring.connect(m, wiring.flipped(self.probe_rd), wiring.flipped(self.rd[0]))
        wiring.connect(m, wiring.flipped(self.probe_wr), wiring.flipped(self.wr[1]))
        m.d.comb += [
            inner.features.eq(self.features),
            inner.reset.eq(self.reset),
            self.idle.eq(inner.idle),
            self.config_changed.eq(inner.config_changed),
            self.needs_reset.eq(inner.needs_reset),
        ]
        return m

class VirtioDeviceHarness(wiring.Component):
    """:class:`VirtioPciDevice` with a :class:`ProbedBackend` and monitor taps.

    Parameters
    ----------
    params : VirtioPciDeviceParams
    test_backend : dict
        Keyword arguments of :class:`~hdl.virtio.test_backend.TestBackend` (latencies).
    tap_depth : int
        Depth of each tap's FIFO.
    """

    def __init__(self, params: VirtioPciDeviceParams, *, test_backend: dict | None = None,
                 tap_depth: int = 256):
        self.backend = ProbedBackend(seq_width=params.seq_width, width=params.width,
                                     cfg_addr_width=params.device_cfg_addr_width,
                                     **(test_backend or {}))
        self.device = VirtioPciDevice(params, self.backend)
        self.tap_depth = tap_depth
        w = params.width
        super().__init__({
            "rx": In(raw_tlp_signature(w)),
            "tx": Out(raw_tlp_signature(w)),
            "done_mon": Out(stream.Signature(VirtqElemDone(params.seq_width))),
            "wr_cmd_mon": Out(stream.Signature(WR_CMD_MON)),
            "wr_done_mon": Out(stream.Signature(WR_DONE_MON)),
            "rd_cmd_mon": Out(stream.Signature(RD_CMD_MON)),
            "overflow": Out(1),
            "probe_rd": In(ReadChannelSignature(w)),
            "probe_wr": In(WriteChannelSignature(w)),
            "device_status": Out(8),
            "engine_error": Out(VirtqError),
            "stats": Out(VirtqStats),
            "dma_status": Out(DmaStatus),
            "bar_counters": Out(BarCounters),
            "transport_counters": Out(TransportCounters),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.device = device = self.device
        backend = self.backend
        wiring.connect(m, wiring.flipped(self.rx), device.rx)
        wiring.connect(m, device.tx, wiring.flipped(self.tx))
        m.d.comb += [
            device.credits.eq(UNLIMITED_CREDITS),
            self.device_status.eq(device.device_status),
            self.engine_error.eq(device.engine_error),
            self.stats.eq(device.stats),
            self.dma_status.eq(device.dma_status),
            self.bar_counters.eq(device.bar_counters),
            self.transport_counters.eq(device.transport_counters),
        ]
        # The probe channels reach into the backend inside the device.
        wiring.connect(m, wiring.flipped(self.probe_rd), backend.probe_rd)
        wiring.connect(m, wiring.flipped(self.probe_wr), backend.probe_wr)

        # Taps (cross-hierarchy reads of the engine's and the backend's ports).
        cycle = Signal(32)
        m.d.sync += cycle.eq(cycle + 1)
        engine = device.engine
        done = backend.done
        wr, rd = engine.ctl_wr, engine.ring_rd
        self._tap(m, "done", self.done_mon, done.valid & done.ready, done.payload)
        self._tap(m, "wr_cmd", self.wr_cmd_mon, wr.cmd.valid & wr.cmd.ready,
                  {"addr": wr.cmd.payload.addr, "len": wr.cmd.payload.len, "cycle": cycle})
        self._tap(m, "wr_done", self.wr_done_mon, wr.done.valid & wr.done.ready,
                  {"cycle": cycle})
        self._tap(m, "rd_cmd", self.rd_cmd_mon,
                  rd.cmd.valid & rd.cmd.ready & (rd.cmd.payload.len == 2),
                  {"addr": rd.cmd.payload.addr, "cycle": cycle})
        return m

    def _tap(self, m, name, port, fire, payload):
        layout = port.payload.shape()
        tap = fifo.SyncFIFOBuffered(width=layout.size, depth=self.tap_depth)
        m.submodules[f"{name}_fifo"] = tap
        value = Signal(layout, name=f"{name}_tap")
        if isinstance(payload, dict):
            m.d.comb += [getattr(value, k).eq(v) for k, v in payload.items()]
        else:
            m.d.comb += value.eq(payload)
        m.d.comb += [
            tap.w_data.eq(value),
            tap.w_en.eq(fire),
            port.valid.eq(tap.r_rdy),
            port.payload.eq(tap.r_data),
            tap.r_en.eq(port.ready),
        ]
        with m.If(fire & ~tap.w_rdy):
            m.d.sync += self.overflow.eq(1)
