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
the ECP5 Versa's (soft) stack. :func:`make_top_pcie7x` builds the same device with an
external configuration space (``config="external"`` of
:class:`hdl.pcie.pcie_function.PcieFunction`): the 7-series block keeps the header and its
standard capabilities, the device serves the virtio vendor capabilities from the block's
user-defined range (0xA8, :mod:`boards.config_space`) and takes ``function`` from the
block; the Nitefury builds it.
:func:`make_standin` builds :class:`boards.standin.StandInFunction`, a small TLP endpoint
for a quick check of a board's flow (``--standin``).
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

from .config_space import PCIE7X_USER_CFG_START
from .standin import StandInFunction

__all__ = ["DeviceParams", "BoardDevice", "make_top", "make_top_pcie7x", "make_standin",
           "design_name", "design_kind"]


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


_FETCH_LOW_WATER = 16


def device_params(params: DeviceParams, *, config: str = "internal",
                  user_config_base: int = PCIE7X_USER_CFG_START) -> VirtioBlkDeviceParams:
    """The device's parameters for a board's :class:`DeviceParams`; ``config`` and
    ``user_config_base`` as in :class:`~hdl.virtio.virtio_pci_device.VirtioPciDeviceParams`
    (``"external"`` needs ``params.msix``)."""
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
        num_queues=params.num_queues, config=config, user_config_base=user_config_base,
        # Fetch a deep queue in batches (docs/virtqueue-engine.md): 16 buffers in service
        # hide a fetch round trip, and a saturated queue needs few control reads.
        fetch_low_water=_FETCH_LOW_WATER)
    return VirtioBlkDeviceParams(pci=pci)


class BoardDevice(wiring.Component):
    """:class:`hdl.top.VirtioBlkDevice` with the ports boards expect (see the module).

    With ``config="internal"`` ``function`` is ignored: the device's own configuration space
    holds the registers. With ``config="external"`` the device takes them from ``function``
    and serves only the vendor capabilities, from ``PCIE7X_USER_CFG_START``. The DMA
    engine's credit limits are tied to "infinite": the PCIe cores these boards use hold a
    TLP back while the link partner lacks credit (back-pressure on ``tx``), which the device
    honours. ``function_reset`` follows ``rst`` (a board's PCIe reset).

    Parameters
    ----------
    params : DeviceParams
    config : str
        ``"internal"`` (default) or ``"external"``.
    """

    def __init__(self, params: DeviceParams, *, config: str = "internal"):
        self.params = params
        self.config = config
        self.device = VirtioBlkDevice(device_params(params, config=config))
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
        if self.config == "external":
            m.d.comb += device.core_control.eq(self.function)
        return m


def make_top(params: DeviceParams) -> wiring.Component:
    """The virtio-blk device for a board that hands every TLP to the design."""
    return BoardDevice(params)


def make_top_pcie7x(params: DeviceParams) -> wiring.Component:
    """The virtio-blk device behind the 7-series integrated block, which owns the
    configuration space (``config="external"``)."""
    return BoardDevice(params, config="external")


def make_standin(params: DeviceParams) -> wiring.Component:
    """The stand-in: a small TLP endpoint to check a board's flow quickly (``--standin``)."""
    return StandInFunction(params)


# What each factory builds: the class, and a few words for --list.
_DESIGNS = {
    make_top: (VirtioBlkDevice, "device, own configuration space"),
    make_top_pcie7x: (VirtioBlkDevice, "device, configuration space shared with the PCIe core"),
    make_standin: (StandInFunction, "stand-in"),
}


def _design(factory) -> tuple[type, str]:
    if factory not in _DESIGNS:
        raise ValueError(f"{factory!r} is not one of the design factories "
                         f"{[f.__name__ for f in _DESIGNS]}")
    return _DESIGNS[factory]


def design_name(factory) -> str:
    """The class a design factory builds, for ``--list`` and reports."""
    cls, _ = _design(factory)
    return f"{cls.__module__}.{cls.__qualname__}"


def design_kind(factory) -> str:
    """A few words on what the factory builds (device or stand-in, who owns the
    configuration space)."""
    return _design(factory)[1]
