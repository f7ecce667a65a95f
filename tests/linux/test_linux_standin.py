"""End to end: Debian's Linux in QEMU finds and drives the stand-in device through the proxy.

The first run on a machine downloads the guest (Debian packages, cached under build/linux/)
and installs qemu-system-x86 when missing (root); then a run takes about 15 s under TCG.
"""
import os
import socket
import time
from pathlib import Path

import pytest

from sim.linux.proxy import (CfgRead, CfgWrite, Command, DeviceReset, GuestMemory, Interrupt,
                             MemoryRegion, ProxyServer)
from sim.linux.qemu import Check, Console, GuestRun
from sim.linux.scenario import BUF_BASE, host_checks, run_standin
from sim.linux.standin import StandinDevice


@pytest.mark.slow
def test_linux_guest_drives_the_standin_device(tmp_path):
    started = time.monotonic()
    report = run_standin(tmp_path / "run", timeout=240)
    seconds = time.monotonic() - started
    print(f"boot {report.boot_seconds:.1f} s, workload {report.workload_seconds:.1f} s, "
          f"total {seconds:.1f} s; guest log {report.run.log_path}")
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    assert not failed, f"failed checks {failed}; guest log {report.run.log_path}"
    assert report.passed
    names = {c.name for c in report.guest_checks}
    assert {"device", "bar0-size", "magic", "scratch64", "dma-needs-bus-master", "dma-page-data",
            "dma-unaligned-data", "dma-not-ram", "irq-pending", "module-virtio_blk", "virtio-pci-driver",
            "ext2"} <= names
    assert {c.name for c in report.host_checks} == {
        "guest-finished", "qemu-probe", "seabios-probe", "dma-crosscheck", "intx", "memory-map"}


class CorruptingDevice(StandinDevice):
    """Flips one byte in the middle of every copy it makes."""

    def _copy(self):
        super()._copy()
        src, dst, length, digest = self.copies[-1]
        if digest is not None:
            middle = dst + length // 2
            self.memory.write(middle, bytes([self.memory.read(middle, 1)[0] ^ 0x01]))


@pytest.mark.slow
def test_a_device_that_corrupts_its_dma_fails_the_run(tmp_path):
    report = run_standin(tmp_path / "run", timeout=240, make_device=CorruptingDevice)
    failed = {c.name for c in report.checks if not c.passed}
    # The guest sees every copy's data differ, so the workload exits non-zero; the device's own
    # record still matches what it read, so the cross-check does not blame the read side.
    assert failed == {"dma-page-data", "dma-unaligned-data", "dma-half-data", "guest-finished"}
    assert not report.passed
    assert report.run.console.workload_rc == 3


def synthetic_run(accesses, info, firmware_done=1000) -> GuestRun:
    """A finished run as run_guest would return it, made up to test the host's judgement."""
    server = ProxyServer(socket.socketpair()[0])
    server.counts.update({Command.SET_IRQFD: 1, Command.SYNC_SYSMEM: 3})
    server.bars.size[0] = 0x1000
    server.interrupt.connect(os.eventfd(0), os.eventfd(0))
    server.interrupt.set_level(True)
    console = Console([Check("device", True, "")], info, 0, None, None)
    return GuestRun(0, 1.0, [], console, server, accesses, firmware_done,
                    [MemoryRegion(0, 0x10000000, 0)], Path("guest.log"))


def firmware_accesses(bar0: int, pos: int = 10):
    return [(0, CfgWrite(0x10, 0xFFFFFFFF, 4), 0), (0, DeviceReset(), 0),
            (pos, CfgRead(0x00, 2), 0x1AF4), (pos, CfgWrite(0x10, 0xFFFFFFFF, 4), 0),
            (pos, CfgWrite(0x10, bar0, 4), 0), (pos, CfgWrite(0x04, 0x103, 2), 0)]


def device_with_one_copy() -> StandinDevice:
    device = StandinDevice(GuestMemory(), Interrupt())
    device.copies = [(BUF_BASE, BUF_BASE + 0x8000, 16, "ab" * 32)]
    return device


def test_host_checks_accept_a_consistent_run():
    device = device_with_one_copy()
    run = synthetic_run(firmware_accesses(0xFEBFF000),
                        [("bar0", "0xfebff000"), ("intx-assertions-expected", "1"),
                         ("dma", f"{BUF_BASE:#x} {BUF_BASE + 0x8000:#x} 16 {'ab' * 32}")])
    assert [c.name for c in host_checks(run, device) if not c.passed] == []


@pytest.mark.parametrize("what", ["digest", "bar0", "late-firmware", "intx", "no-reset"])
def test_host_checks_catch_inconsistencies(what):
    device = device_with_one_copy()
    digest = "cd" * 32 if what == "digest" else "ab" * 32
    bar0 = "0xfebfe000" if what == "bar0" else "0xfebff000"
    accesses = firmware_accesses(0xFEBFF000, pos=2000 if what == "late-firmware" else 10)
    if what == "no-reset":
        accesses = [a for a in accesses if not isinstance(a[1], DeviceReset)]
    run = synthetic_run(accesses, [("bar0", bar0), ("intx-assertions-expected",
                                                     "2" if what == "intx" else "1"),
                                   ("dma", f"{BUF_BASE:#x} {BUF_BASE + 0x8000:#x} 16 {digest}")])
    expected = {"digest": {"dma-crosscheck"}, "bar0": {"seabios-probe"},
                "late-firmware": {"seabios-probe"}, "intx": {"intx"},
                "no-reset": {"seabios-probe"}}[what]
    assert {c.name for c in host_checks(run, device) if not c.passed} == expected
