from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..spec import Cfg, FunctionControl, PcieCap

__all__ = ["CfgStatus"]


class CfgStatus(wiring.Component):
    """What the 7-series block's configuration space tells the rest of the function.

    With the hard block the host's configuration writes never reach user logic (except in the
    user-defined range, see ``docs/boards.md``): the block keeps the Command and Device
    Control registers and the captured bus/device numbers, and shows them on its ``cfg_*``
    status outputs (PG054, "Configuration Interface" port table). This component turns those
    outputs into the :data:`~hdl.pcie.spec.FunctionControl` that the device's own
    configuration space would otherwise produce, one clock later (the outputs are static
    between configuration writes; the register keeps them off the datapath's timing paths).

    Reset: ``function`` reads all zero (no bus mastering, no memory space, 128-byte sizes)
    until the first clock after reset, as the registers it mirrors are after a link reset.

    Attributes
    ----------
    cfg_command : In(16)
        The Command register (``cfg_command``; PCIe Base §7.5.1.1.3).
    cfg_dcommand : In(16)
        The Device Control register (``cfg_dcommand``; §7.5.3.4).
    cfg_bus_number, cfg_device_number, cfg_function_number : In(8), In(5), In(3)
        The function's ID as captured by the block from Configuration Write Requests
        (§2.2.6.2).
    cfg_interrupt_msixenable, cfg_interrupt_msixfm : In(1), In(1)
        MSI-X Enable and Function Mask of the block's MSI-X capability (§7.7.2.2).
    function : Out(FunctionControl)
    """

    def __init__(self):
        super().__init__({
            "cfg_command": In(16),
            "cfg_dcommand": In(16),
            "cfg_bus_number": In(8),
            "cfg_device_number": In(5),
            "cfg_function_number": In(3),
            "cfg_interrupt_msixenable": In(1),
            "cfg_interrupt_msixfm": In(1),
            "function": Out(FunctionControl),
        })

    def elaborate(self, platform):
        m = Module()
        f = self.function
        cmd, dctl = self.cfg_command, self.cfg_dcommand

        def bit(value, mask):
            return value[mask.bit_length() - 1]

        m.d.sync += [
            f.requester_id.eq(Cat(self.cfg_function_number, self.cfg_device_number,
                                  self.cfg_bus_number)),
            f.memory_space_en.eq(bit(cmd, Cfg.CMD_MEMORY_SPACE)),
            f.bus_master_en.eq(bit(cmd, Cfg.CMD_BUS_MASTER)),
            f.interrupt_disable.eq(bit(cmd, Cfg.CMD_INTERRUPT_DISABLE)),
            f.max_payload_size.eq(dctl[PcieCap.DEV_CTL_MPS_SHIFT:PcieCap.DEV_CTL_MPS_SHIFT + 3]),
            f.max_read_request_size.eq(
                dctl[PcieCap.DEV_CTL_MRRS_SHIFT:PcieCap.DEV_CTL_MRRS_SHIFT + 3]),
            f.ext_tag_en.eq(bit(dctl, PcieCap.DEV_CTL_EXT_TAG)),
            f.msix_enable.eq(self.cfg_interrupt_msixenable),
            f.msix_function_mask.eq(self.cfg_interrupt_msixfm),
        ]
        return m
