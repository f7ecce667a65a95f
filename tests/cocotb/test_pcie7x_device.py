"""End to end through the 7-series adapters: a root complex enumerates the device behind a
model of the hard block (sim/pcie7x_model.py) and the Linux-like driver model drives it.

The design is what the Nitefury board builds (``NitefuryBoard.design``,
:func:`boards.device.make_top_pcie7x`): the whole virtio-blk device with an external
configuration space, inside :class:`boards.pcie7x_device.Pcie7xDevice` (AXI4-Stream
adapters, CfgStatus). It runs at both user interface widths of the block: 128 bits (the
Nitefury's Gen2 x4) and 64 bits (a Gen2 x1 variant of the same parameters). The checks are
in ``pcie7x_device_tb.py``: the capability list (the block's, then the virtio capabilities
the RTL serves from 0xA8), a Linux-like initialisation with VIRTIO_F_IN_ORDER and MSI-X
enabled through the block's capability, a virtio-blk write and read-back of several
sectors against the golden disk, and MSI-X messages seen by the root complex.

The stand-in (``--standin``) is not simulated here; its build is checked by
``tests/boards/test_boards_build.py``.
"""
import dataclasses
import functools

import pytest

from boards.device import DeviceParams, device_params, make_top_pcie7x
from boards.nitefury import NitefuryBoard
from boards.pcie7x_device import Pcie7xDevice
from sim.runner import run

NITEFURY = NitefuryBoard().params()
PARAMS = {
    128: NITEFURY,
    64: dataclasses.replace(NITEFURY, tlp_width=64, link_width=1),
}


def pcie7x_top(params: DeviceParams) -> Pcie7xDevice:
    return Pcie7xDevice(params, make_top_pcie7x)


def dut_params(params: DeviceParams) -> dict:
    """What the testbench needs to know of the build: the board parameters and the device's
    disk, serial and reorder depth (``sim.blk_device_tb.BlkDeviceTB``)."""
    blk = device_params(params, config="external")
    return {**dataclasses.asdict(params), "width": params.tlp_width,
            "msix_vectors": params.msix_vectors, "capacity": blk.capacity,
            "serial": blk.serial.decode(), "reorder_depth": blk.pci.reorder_depth}


@pytest.mark.parametrize("width", [64, 128])
def test_pcie7x_device_end_to_end(width):
    params = PARAMS[width]
    assert NitefuryBoard.design is make_top_pcie7x
    run(functools.partial(pcie7x_top, params), toplevel="pcie7x_device",
        test_module="pcie7x_device_tb", params=dut_params(params), public="ports")
