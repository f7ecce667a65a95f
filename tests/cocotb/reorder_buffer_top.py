"""Test-only toplevel for the cocotb run of the ReorderBuffer: every input in one vector,
every output in another.

A cocotb testbench spends most of its time in simulator handle accesses (each a few
microseconds); with all ports behind two vectors the testbench makes one read and one
write per clock instead of fifteen, which is what lets the run reach 10^6 completions
within its time budget. The wrapper only wires ports through.
"""
from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdl.virtio.reorder_buffer import ReorderBuffer


class PackedReorderBuffer(wiring.Component):
    """A :class:`ReorderBuffer` (built with ``params``) behind ``drive`` and ``sample``."""

    def __init__(self, **params):
        self.rb = ReorderBuffer(**params)
        sw = self.rb.seq_width
        self.drive_layout = data.StructLayout({
            "alloc_ready": 1,
            "retire_ready": 1,
            "flush": 1,
            "bypass": 1,
            "complete_valid": 1,
            "complete": self.rb.complete_layout,
        })
        self.sample_layout = data.StructLayout({
            "alloc_valid": 1,
            "retire_valid": 1,
            "busy": 1,
            "error": 1,
            "complete_ready": 1,
            "alloc_seq": sw,
            "error_seq": sw,
            "retire": self.rb.retire_layout,
        })
        super().__init__({
            "drive": In(self.drive_layout),
            "sample": Out(self.sample_layout),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rb = rb = self.rb
        d, s = self.drive, self.sample
        m.d.comb += [
            rb.alloc.ready.eq(d.alloc_ready),
            rb.retire.ready.eq(d.retire_ready),
            rb.flush.eq(d.flush),
            rb.bypass.eq(d.bypass),
            rb.complete.valid.eq(d.complete_valid),
            rb.complete.payload.eq(d.complete),
            s.alloc_valid.eq(rb.alloc.valid),
            s.retire_valid.eq(rb.retire.valid),
            s.busy.eq(rb.busy),
            s.error.eq(rb.error),
            s.complete_ready.eq(rb.complete.ready),
            s.alloc_seq.eq(rb.alloc.payload),
            s.error_seq.eq(rb.error_seq),
            s.retire.eq(rb.retire.payload),
        ]
        return m
