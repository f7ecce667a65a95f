"""The part of configuration space a PCIe core with its own configuration space leaves to us."""
from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config_target import ConfigTarget
from .params import VendorCapability, capability_chain, place_capabilities
from .register_bus import RegisterBus
from .spec import check_tlp_width, tlp_signature

__all__ = ["UserConfigSpace", "USER_CFG_BASE"]

USER_CFG_BASE = 0xA8
"""Default start of the user-defined range: where the 7-series integrated block (PG054,
``PCI_CFG_Space_Addr`` = 2Ah DWs) hands configuration requests to user logic, right after
its MSI-X capability (9Ch..A7h)."""


class UserConfigSpace(wiring.Component):
    """Serves the vendor-specific capabilities in a PCIe core's user-defined configuration
    range, the core keeping the header and the standard capabilities.

    The capabilities sit back to back from ``base`` in list order; each one's Next Pointer
    is the next one's offset and the last one's is 0 (PCI Local Bus 3.0 §6.7), so the core's
    last capability must point at ``base``. Configuration requests the core forwards
    (CfgRd0/CfgWr0) are answered here through :class:`~hdl.pcie.config_target.ConfigTarget`:

    * a capability's DW reads its bytes (:meth:`VendorCapability.image`), except the
      ``forward`` DWs, which go to ``cfg_ext`` as with the function's own configuration
      space (for the ``VIRTIO_PCI_CAP_PCI_CFG`` window, virtio 1.2 §4.1.4.9);
    * every other DW reads 0, as PG054 requires of unimplemented user-defined registers;
    * writes to anything but a forwarded DW are completed and ignored (read-only);
    * completions carry ``completer_id`` (the core's captured Bus/Device/Function Number);
      requests to a function number other than 0 get Unsupported Request.

    Reset: idle, no request in progress (there are no registers: the capabilities are
    constants and the forwarded DWs belong to the ``cfg_ext`` client).

    Parameters
    ----------
    vendor_caps : sequence of VendorCapability
    base : int
        Offset of the first capability, DW aligned in 40h..FFh (default A8h); the chain must
        end below 100h.
    width : int
        TLP stream width, 64 or 128.

    Attributes
    ----------
    rx : In(tlp_signature(width))
        CfgRd0 / CfgWr0 requests only.
    tx : Out(tlp_signature(width))
        Their completions.
    cfg_ext : Out(RegisterBus.Signature(addr_width=6))
        Forwarded DWs; ``addr`` is the configuration DW index.
    completer_id : In(16)
    """

    def __init__(self, *, vendor_caps, base: int = USER_CFG_BASE, width: int = 64):
        self.width = check_tlp_width(width)
        vendor_caps = tuple(vendor_caps)
        if not vendor_caps:
            raise ValueError("a user configuration space needs at least one vendor capability")
        for cap in vendor_caps:
            if not isinstance(cap, VendorCapability):
                raise TypeError(f"vendor_caps must hold VendorCapability objects, not {cap!r}")
        self.vendor_caps = vendor_caps
        self.base = base
        self.vendor_cap_offsets = place_capabilities([cap.size for cap in vendor_caps], base)
        self.forwarded_dws = sorted(
            (off + b) // 4 for cap, off in zip(vendor_caps, self.vendor_cap_offsets)
            for b in cap.forward[::4])
        super().__init__({
            "rx": In(tlp_signature(width)),
            "tx": Out(tlp_signature(width)),
            "cfg_ext": Out(RegisterBus.Signature(addr_width=6)),
            "completer_id": In(16),
        })

    def image(self) -> bytes:
        """The bytes of the capability chain from ``base``, forwarded DWs as the capability
        bodies give them (what the host reads before anything writes a forwarded DW)."""
        return capability_chain(self.vendor_caps, self.base)

    def constant_dws(self) -> dict[int, int]:
        """Read-only DWs by DW index (forwarded DWs left out)."""
        raw = self.image()
        return {(self.base + k) // 4: int.from_bytes(raw[k:k + 4], "little")
                for k in range(0, len(raw), 4)
                if (self.base + k) // 4 not in self.forwarded_dws}

    def elaborate(self, platform):
        m = Module()
        m.submodules.target = target = ConfigTarget(width=self.width,
                                                    forwarded=self.forwarded_dws)
        wiring.connect(m, wiring.flipped(self.rx), target.rx)
        wiring.connect(m, target.tx, wiring.flipped(self.tx))
        wiring.connect(m, target.cfg_ext, wiring.flipped(self.cfg_ext))
        m.d.comb += target.completer_id.eq(self.completer_id)
        # local_write is left alone: there is nothing writable here.
        with m.Switch(target.request.cfg_reg):
            for dw_index, value in sorted(self.constant_dws().items()):
                with m.Case(dw_index):
                    m.d.comb += target.read_data.eq(value)
        return m
