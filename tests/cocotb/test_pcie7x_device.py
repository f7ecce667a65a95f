"""End to end through the 7-series adapters: a root complex enumerates the device behind a
model of the hard block (sim/pcie7x_model.py) and talks to BAR0.

The design is what the Nitefury board builds (``NitefuryBoard.design``): the stand-in
(``boards/standin.py``), because the device cannot yet take its configuration registers from
the hard block. The test checks enumeration, the capability list (the block's own
capabilities plus the virtio vendor capabilities the RTL serves from the user-defined
configuration space) and BAR0 accesses. A virtio-blk read/write through the adapters needs
the device in that mode and is not written.
"""
from boards.device import design_name
from boards.nitefury import NitefuryBoard
from boards.pcie7x_device import Pcie7xDevice
from sim.runner import run


def test_pcie7x_device_end_to_end():
    board = NitefuryBoard()
    params = board.params()
    run(lambda: Pcie7xDevice(params, board.design), toplevel="pcie7x_device",
        test_module="pcie7x_device_tb",
        params={"design": design_name(board.design), **params.__dict__})
