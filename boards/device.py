"""What a board builds: the device parameters a board needs, and the designs boards build.

Every board builds a design made by a factory ``DeviceParams -> wiring.Component`` with

* ``rx``: ``In(raw_tlp_signature(params.tlp_width))``, TLPs from the host;
* ``tx``: ``Out(raw_tlp_signature(params.tlp_width))``, TLPs to the host;
* ``function``: ``In(FunctionControl)``, used only on boards whose PCIe core owns the
  configuration space (the 7-series hard block): the core's Command / Device Control / bus
  number / MSI-X enable, through :class:`hdl.pcie.xilinx7.CfgStatus`. A design whose own
  configuration space produces these ignores the port.

:func:`make_top` builds the device (:class:`BoardDevice`: :class:`hdl.top.VirtioBlkDevice`
with its own configuration space), for boards that hand every TLP to the design, such as
the ECP5 Versa's (soft) stack. :func:`make_standin` builds
:class:`boards.standin.StandInFunction`, a small TLP endpoint that serves the virtio
capability list from the 7-series block's user-defined configuration range: the device
cannot yet take its configuration registers from a hard block (``function``), so the
Nitefury builds the stand-in and every report says so.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma.layouts import UNLIMITED_CREDITS
from hdl.pcie.params import FunctionIdentity, LinkParams
from hdl.pcie.spec import MPS_BYTES, FunctionControl, check_tlp_width, raw_tlp_signature
from hdl.top import VirtioBlkDevice, VirtioBlkDeviceParams
from hdl.virtio.transport_map import TransportMap
from hdl.virtio.virtio_pci_device import VirtioPciDeviceParams
from hdl.virtio.spec import CommonCfg, PCI_VENDOR_ID, pci_device_id, DeviceType

from .standin import StandInFunction

__all__ = ["DeviceParams", "BoardDevice", "make_top", "make_standin", "design_name"]


def _check_bits(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must be an integer of {bits} bits, not {value!r}")


@dataclass(frozen=True)
class DeviceParams:
    """The device's parameters that a board and a PCIe core need to agree on.

    Defaults are the project's identity and BAR0 map (``docs/architecture.md``): a modern
    virtio-blk function (virtio 1.2 §4.1.2), 32 KiB BAR0 with common cfg at 0x0000, ISR at
    0x1000, device cfg at 0x2000, notify at 0x3000, MSI-X table at 0x4000 and PBA at 0x5000.

    Parameters
    ----------
    tlp_width : int
        Raw TLP stream width, 64 or 128 bits.
    link_speed : int
        Maximum link speed as the Supported Link Speeds index: 1 = 2.5 GT/s, 2 = 5.0 GT/s.
    link_width : int
        Maximum link width in lanes (1, 2, 4 or 8).
    max_payload_size : int
        Max_Payload_Size Supported in Device Capabilities, bytes (128 .. 4096, power of 2).
    max_read_request_size : int
        The largest read request the device's DMA engine issues, bytes; it also obeys the
        host's Max_Read_Request_Size from Device Control (PCIe Base §7.5.3.4).
    num_queues : int
        virtio-blk request queues; one MSI-X vector each plus one for configuration changes.
    """
    tlp_width: int = 64
    vendor_id: int = PCI_VENDOR_ID
    device_id: int = pci_device_id(DeviceType.BLOCK)
    revision_id: int = 0x01
    class_code: int = 0x010000
    subsystem_vendor_id: int = PCI_VENDOR_ID
    subsystem_id: int = 0x1100
    bar0_size: int = 0x8000
    bar0_64bit: bool = False
    msix: bool = True
    num_queues: int = 1
    msix_table_offset: int = 0x4000
    msix_pba_offset: int = 0x5000
    common_cfg_offset: int = 0x0000
    isr_offset: int = 0x1000
    device_cfg_offset: int = 0x2000
    notify_offset: int = 0x3000
    notify_off_multiplier: int = 4
    link_speed: int = 1
    link_width: int = 1
    max_payload_size: int = 256
    max_read_request_size: int = 512
    ext_tag: bool = True

    def __post_init__(self):
        check_tlp_width(self.tlp_width)
        for name, bits in (("vendor_id", 16), ("device_id", 16), ("revision_id", 8),
                           ("class_code", 24), ("subsystem_vendor_id", 16),
                           ("subsystem_id", 16)):
            _check_bits(name, getattr(self, name), bits)
        if self.bar0_size < 0x8000 or self.bar0_size & (self.bar0_size - 1):
            raise ValueError(f"BAR0 size {self.bar0_size:#x} must be a power of two of at "
                             f"least 0x8000 (the register map needs 32 KiB)")
        if not 1 <= self.num_queues <= 64:
            raise ValueError(f"num_queues {self.num_queues} is outside 1..64")
        for name in ("msix_table_offset", "msix_pba_offset", "common_cfg_offset",
                     "isr_offset", "device_cfg_offset", "notify_offset"):
            offset = getattr(self, name)
            if offset % 8 or offset >= self.bar0_size:
                raise ValueError(f"{name} {offset:#x} must be 8-byte aligned and inside BAR0 "
                                 f"(PCI Local Bus 3.0 §6.8.2, virtio 1.2 §4.1.4)")
        if self.link_speed not in (1, 2):
            raise ValueError(f"link speed {self.link_speed} is not 1 (2.5 GT/s) or "
                             f"2 (5.0 GT/s), the rates these boards' PCIe cores support")
        if self.link_width not in (1, 2, 4, 8):
            raise ValueError(f"link width x{self.link_width} is not x1, x2, x4 or x8")
        for name in ("max_payload_size", "max_read_request_size"):
            size = getattr(self, name)
            if size not in [MPS_BYTES(code) for code in range(6)]:
                raise ValueError(f"{name} {size} is not one of 128, 256, ..., 4096 bytes "
                                 f"(PCIe Base §7.5.3.3)")

    @property
    def msix_vectors(self) -> int:
        """MSI-X table entries: one per queue plus the configuration-change vector."""
        return self.num_queues + 1

    @property
    def common_cfg_length(self) -> int:
        return CommonCfg.SIZE


def device_params(params: DeviceParams) -> VirtioBlkDeviceParams:
    """The device's parameters for a board's :class:`DeviceParams`."""
    layout = TransportMap()
    for name, value in (("common_cfg_offset", layout.common_offset),
                        ("isr_offset", layout.isr_offset),
                        ("device_cfg_offset", layout.device_offset),
                        ("notify_offset", layout.notify_offset),
                        ("notify_off_multiplier", layout.notify_off_multiplier),
                        ("msix_table_offset", layout.msix_table_offset),
                        ("msix_pba_offset", layout.msix_pba_offset),
                        ("bar0_size", layout.bar_size)):
        if getattr(params, name) != value:
            raise ValueError(f"{name} {getattr(params, name):#x}: the device's BAR0 layout is "
                             f"hdl.virtio.transport_map.TransportMap's, which has {value:#x}")
    mps_code = [MPS_BYTES(code) for code in range(6)].index(params.max_payload_size)
    pci = VirtioPciDeviceParams(
        width=params.tlp_width,
        identity=FunctionIdentity(
            vendor_id=params.vendor_id, device_id=params.device_id,
            revision_id=params.revision_id, class_code=params.class_code,
            subsystem_vendor_id=params.subsystem_vendor_id, subsystem_id=params.subsystem_id),
        bar_64bit=params.bar0_64bit, msix_vectors=params.msix_vectors if params.msix else 0,
        max_payload_size_supported=mps_code,
        link=LinkParams(speed=params.link_speed, width=params.link_width),
        num_queues=params.num_queues)
    return VirtioBlkDeviceParams(pci=pci)


class BoardDevice(wiring.Component):
    """:class:`hdl.top.VirtioBlkDevice` with the ports boards expect (see the module).

    ``function`` is ignored: the device's own configuration space holds the registers.
    The DMA engine's credit limits are tied to "infinite": the PCIe cores these boards use
    hold a TLP back while the link partner lacks credit (back-pressure on ``tx``), which
    the device honours. ``function_reset`` follows ``rst`` (a board's PCIe reset).
    """

    def __init__(self, params: DeviceParams):
        self.params = params
        self.device = VirtioBlkDevice(device_params(params))
        super().__init__({
            "rx": In(raw_tlp_signature(params.tlp_width)),
            "tx": Out(raw_tlp_signature(params.tlp_width)),
            "function": In(FunctionControl),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.device = device = self.device
        wiring.connect(m, wiring.flipped(self.rx), device.rx)
        wiring.connect(m, device.tx, wiring.flipped(self.tx))
        m.d.comb += device.credits.eq(UNLIMITED_CREDITS)
        return m


def make_top(params: DeviceParams) -> wiring.Component:
    """The virtio-blk device for a board that hands every TLP to the design."""
    return BoardDevice(params)


def make_standin(params: DeviceParams) -> wiring.Component:
    """The stand-in, for a board whose PCIe core owns the configuration space."""
    return StandInFunction(params)


def design_name(factory) -> str:
    """What a design factory builds, for ``--list`` and reports."""
    cls = VirtioBlkDevice if factory is make_top else StandInFunction
    return f"{cls.__module__}.{cls.__qualname__}"
