"""A toplevel with no logic of interest, for cocotb runs that only need cocotb's scheduler.

The driver model and the reference device (sim/driver, sim/refdev) are pure Python, but
cocotbext-pcie runs on cocotb's triggers, which need a simulator underneath. This is the
smallest design Verilator accepts with a port: one register toggling on the clock, which
the testbenches never drive (simulated time advances through timers alone).
"""
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out


class SimAnchor(wiring.Component):
    """Nothing but a clock domain and a toggling output."""

    heartbeat: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.heartbeat.eq(~self.heartbeat)
        return m
