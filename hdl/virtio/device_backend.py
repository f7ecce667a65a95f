"""The contract between the generic virtio-pci device core and a device backend.

A backend is the device-type part of a virtio device (the RTL test backend,
virtio-blk in hdl/blk/). :class:`~hdl.virtio.virtio_pci_device.VirtioPciDevice` instantiates it
and connects, by name, the members of :class:`DeviceBackendSignature` (the backend's view):

========================  =========  ============================================================
``elem``                  In         elements from the virtqueue engine (``VirtqElemDesc`` beats)
``done``                  Out        one ``VirtqElemDone`` per element, in any order
``rd[i]``, ``wr[j]``      Out        the backend's own DMA read / write channels
                                     (``hdl/pcie/dma_port.py``), present when it has any
``cfg``                   In         the device configuration window (virtio 1.2 §4.1.4.6) as a
                                     register bus client: the backend answers every address of
                                     the window (unused ones read 0); it may hold ``ack`` low
``features``              In(64)     the negotiated feature bits (0 until FEATURES_OK)
``reset``                 In(1)      device reset: held until ``idle``; the backend takes and drops
                                     element beats, finishes DMA commands it has offered,
                                     forgets everything else, and completes nothing
``idle``                  Out(1)     under ``reset``: nothing outstanding any more
``config_changed``        Out(1)     pulse: the device configuration changed (the transport
                                     bumps ``config_generation`` and notifies a running driver)
``needs_reset``           Out(1)     the backend met an error it cannot recover from
                                     (DEVICE_NEEDS_RESET, §2.1.2); cleared by ``reset``
========================  =========  ============================================================

and these Python attributes: ``read_channels`` and ``write_channels`` (ints, the number of
``rd`` / ``wr`` channels), ``device_features`` (the device-type feature bits the backend
offers: bits 0..23 and 50..63, §2.2; the core adds the transport and ring bits).
"""
from __future__ import annotations

from amaranth.hdl import unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma_port import ReadChannelSignature, WriteChannelSignature
from hdl.pcie.register_bus import RegisterBus
from hdl.virtio.virtqueue_port import VirtqElemDesc, VirtqElemDone

__all__ = ["DeviceBackendSignature", "DEVICE_FEATURE_BITS", "check_backend"]

DEVICE_FEATURE_BITS = (1 << 24) - 1 | ((1 << 64) - 1) ^ ((1 << 50) - 1)
"""Feature bits reserved for the device type within the 64 bits the device offers:
0..23 and 50..63 (virtio 1.2 §2.2)."""


class DeviceBackendSignature(wiring.Signature):
    """The members a backend must have (its own view: ``elem`` is ``In``).

    Parameters
    ----------
    seq_width : int
        The engine's ``seq_width``.
    width : int
        DMA data width, 64 or 128.
    cfg_addr_width : int
        DW address width of the device configuration window.
    read_channels, write_channels : int
        The backend's DMA channels (0 or more each).
    """

    def __init__(self, *, seq_width: int, width: int, cfg_addr_width: int,
                 read_channels: int, write_channels: int):
        members = {
            "elem": In(stream.Signature(VirtqElemDesc(seq_width))),
            "done": Out(stream.Signature(VirtqElemDone(seq_width))),
            "cfg": In(RegisterBus.Signature(addr_width=cfg_addr_width)),
            "features": In(unsigned(64)),
            "reset": In(1),
            "idle": Out(1),
            "config_changed": Out(1),
            "needs_reset": Out(1),
        }
        if read_channels:
            members["rd"] = Out(ReadChannelSignature(width)).array(read_channels)
        if write_channels:
            members["wr"] = Out(WriteChannelSignature(width)).array(write_channels)
        super().__init__(members)


def _same_member(a: wiring.Member, b: wiring.Member) -> bool:
    """Structural equality of two members (signature classes need not define ``__eq__``)."""
    if a.flow != b.flow or a.dimensions != b.dimensions or a.is_port != b.is_port:
        return False
    if a.is_port:
        return a.shape == b.shape
    am, bm = a.signature.members, b.signature.members
    return set(am) == set(bm) and all(_same_member(am[k], bm[k]) for k in am)


def check_backend(backend, *, seq_width: int, width: int, cfg_addr_width: int) -> None:
    """Raise ``TypeError`` / ``ValueError`` unless ``backend`` keeps the contract."""
    for attr in ("read_channels", "write_channels", "device_features"):
        if not isinstance(getattr(backend, attr, None), int):
            raise TypeError(f"backend {backend!r} must have an integer attribute {attr!r}")
    if backend.device_features & ~DEVICE_FEATURE_BITS or backend.device_features < 0:
        raise ValueError(f"backend offers feature bits {backend.device_features:#x} outside "
                         f"the device-type ranges 0..23 and 50..63 (virtio 1.2 §2.2)")
    required = DeviceBackendSignature(
        seq_width=seq_width, width=width, cfg_addr_width=cfg_addr_width,
        read_channels=backend.read_channels, write_channels=backend.write_channels)
    members = getattr(getattr(backend, "signature", None), "members", None)
    if members is None:
        raise TypeError(f"backend must be a wiring.Component, not {backend!r}")
    for name, member in required.members.items():
        if name not in members:
            raise TypeError(f"backend {type(backend).__name__} has no {name!r} port "
                            f"(see hdl/virtio/device_backend.py)")
        if not _same_member(members[name], member):
            raise TypeError(f"backend port {name!r} is {members[name]!r}, the device core "
                            f"needs {member!r}")
