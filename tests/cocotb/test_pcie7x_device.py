"""End to end through the 7-series adapters: a root complex enumerates the device behind a
model of the hard block (sim/pcie7x_model.py) and talks to BAR0.

The design is whatever ``boards.device.make_top`` builds. Today that is the stand-in
(``boards/standin.py``): the test checks enumeration, the capability list (the block's own
capabilities plus the virtio vendor capabilities the RTL serves from the user-defined
configuration space) and BAR0 accesses. The virtio-blk read/write scenario needs the device
top (hdl/top.py) and is not written yet; with the top dropped into make_top, the enumeration
and capability checks apply unchanged.
"""
from boards.device import DESIGN_NAME, make_top
from boards.nitefury import NitefuryBoard
from boards.pcie7x_device import Pcie7xDevice
from sim.runner import run


def test_pcie7x_device_end_to_end():
    params = NitefuryBoard().params()
    run(lambda: Pcie7xDevice(params, make_top), toplevel="pcie7x_device",
        test_module="pcie7x_device_tb", params={"design": DESIGN_NAME, **params.__dict__})
