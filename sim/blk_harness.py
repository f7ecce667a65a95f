"""Simulation top for the virtio-blk backend: the backend, a RAM disk, storage-port taps.

Not synthesizable product code: it lets cocotb tests drive
:class:`~hdl.blk.virtio_blk_backend.VirtioBlkBackend` through its ports. The backend is
built with its storage port outside (``storage=None``) and a
:class:`~hdl.blk.ram_disk.RamDisk` is connected to it here, so that the testbench can watch
the storage port: ``st_cmd_mon`` shows every command taken, ``st_cmd_offer`` that a
command is offered (taken or not), ``st_done_mon`` every ``done`` taken, ``st_rd_mon`` the last beat of every READ burst taken (taps: ``valid``
marks a transfer, ``ready`` is ignored). Every other port is the backend's, unchanged:
``elem``, ``done``, ``cfg``, ``features``, ``reset``, ``idle``, ``config_changed``,
``needs_reset``, ``rd__0``, ``wr__0``.
"""
import random

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.blk.ram_disk import RamDisk
from hdl.blk.storage_port import storage_cmd_layout, storage_done_layout, storage_rd_layout
from hdl.blk.virtio_blk_backend import VirtioBlkBackend

__all__ = ["BlkHarness"]


class BlkHarness(wiring.Component):
    """:class:`VirtioBlkBackend` + :class:`RamDisk` with storage-port monitor taps.

    Parameters
    ----------
    backend : dict
        Keyword arguments of :class:`VirtioBlkBackend` other than ``storage`` and
        ``capacity``.
    disk : dict
        Keyword arguments of :class:`RamDisk` other than ``width``, ``tag_width`` and
        ``init``; ``init_seed``, when given, fills the disk with
        ``random.Random(init_seed).randbytes(capacity * 512)``.
    """

    def __init__(self, *, backend: dict, disk: dict):
        self.backend = be = VirtioBlkBackend(capacity=disk["capacity"], **backend)
        width, tag_width = be.engine.width, be.tag_width
        disk = dict(disk)
        init_seed = disk.pop("init_seed", None)
        init = (random.Random(init_seed).randbytes(disk["capacity"] * 512)
                if init_seed is not None else None)
        self.disk = RamDisk(width=width, tag_width=tag_width, init=init, **disk)
        members = dict(be.signature.members)
        del members["storage"]
        super().__init__({
            **members,
            "st_cmd_mon": Out(stream.Signature(storage_cmd_layout(tag_width))),
            "st_cmd_offer": Out(1),
            "st_done_mon": Out(stream.Signature(storage_done_layout(tag_width))),
            "st_rd_mon": Out(stream.Signature(storage_rd_layout(width, tag_width))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.backend = be = self.backend
        m.submodules.disk = disk = self.disk
        st = be.storage
        wiring.connect(m, st, disk.storage)
        for name in ("elem", "cfg"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(be, name))
        wiring.connect(m, be.done, wiring.flipped(self.done))
        wiring.connect(m, be.rd[0], wiring.flipped(self.rd[0]))
        wiring.connect(m, be.wr[0], wiring.flipped(self.wr[0]))
        m.d.comb += [
            be.features.eq(self.features),
            be.reset.eq(self.reset),
            self.idle.eq(be.idle),
            self.config_changed.eq(be.config_changed),
            self.needs_reset.eq(be.needs_reset),
            self.st_cmd_mon.valid.eq(st.cmd.valid & st.cmd.ready),
            self.st_cmd_mon.payload.eq(st.cmd.payload),
            self.st_cmd_offer.eq(st.cmd.valid),
            self.st_done_mon.valid.eq(st.done.valid & st.done.ready),
            self.st_done_mon.payload.eq(st.done.payload),
            self.st_rd_mon.valid.eq(st.rd_data.valid & st.rd_data.ready
                                    & st.rd_data.payload.last),
            self.st_rd_mon.payload.eq(st.rd_data.payload),
        ]
        return m
