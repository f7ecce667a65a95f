"""The cocotb side of ``python -m sim.lspci``: enumerate the function and dump its config space.

Writes a JSON file (path in ``LSPCI_OUT``) with the bus/device/function, the BARs the root
complex assigned, and the first ``LSPCI_BYTES`` (256 or 4096) bytes of configuration space
as read through the link after
enumeration and after the driver-like set-up the tool asks for (``LSPCI_ENABLE``: memory
space and bus mastering on, MSI-X vectors allocated).
"""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.pcie.core import RootComplex

from sim.pcie_bridge import PcieBridge
from sim.register_client import RegisterClientModel


@cocotb.test()
async def dump_config_space(dut):
    params = json.loads(os.environ["DUT_PARAMS"])
    Clock(dut.clk, 4, unit="ns").start()
    rc = RootComplex()
    bridge = PcieBridge(dut, dut.clk, width=params["width"], link_speed=params["link_speed"],
                        link_width=params["link_width"])
    rc.make_port().connect(bridge)
    for name in ("common", "isr", "device", "notify"):
        RegisterClientModel(dut, f"regs__{name}", dut.clk, 0x1000, max_wait=0)
    RegisterClientModel(dut, "cfg_ext", dut.clk, 256, max_wait=0)
    for port in ("intx", "dma_pending", "function_reset", "dma_req__valid", "dma_cpl__ready"):
        getattr(dut, port).value = 0
    if params["msix_vectors"]:
        dut.msix__valid.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 10)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 10)

    await rc.enumerate()
    dev = next(d for d in _functions(rc.host_bridge.bus) if not d.is_bridge())
    if os.environ.get("LSPCI_ENABLE") == "1":
        await dev.enable_device()
        await dev.set_master()
        if params["msix_vectors"]:
            await dev.alloc_irq_vectors(1, params["msix_vectors"])
    cfg = await rc.config_read(dev.pcie_id, 0, int(os.environ.get("LSPCI_BYTES", "256")))
    bars = [{"index": i, "addr": dev.bar_addr[i], "size": dev.bar_size[i],
             "raw": dev.bar_raw[i]} for i in range(6) if dev.bar_size[i]]
    with open(os.environ["LSPCI_OUT"], "w") as f:
        json.dump({"bdf": str(dev.pcie_id), "config": cfg.hex(), "bars": bars}, f)


def _functions(bus):
    yield from bus.devices
    for child in bus.children:
        yield from _functions(child)
