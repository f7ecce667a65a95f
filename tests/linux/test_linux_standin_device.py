"""The stand-in PCI device on its own: configuration space, registers, DMA, INTx.

Expected values come from the PCI rules (read-only IDs, BAR sizing, Command register bits) and
the register map in the module docstring, not from running the device.
"""
import hashlib
import os

import pytest

from sim.linux.proxy import GuestMemory, Interrupt, MemoryRegion
from sim.linux.standin import (BAR0_SIZE, CTRL_DONE, CTRL_ERROR, CTRL_START, DMA_MAX_LEN,
                               IRQ_DMA_DONE, MAGIC, Reg, StandinDevice)

RAM_BASE = 0x100000
RAM_SIZE = 0x40000


@pytest.fixture
def device():
    fd = os.memfd_create("ram")
    os.ftruncate(fd, RAM_SIZE)
    memory = GuestMemory()
    memory.remap([MemoryRegion(RAM_BASE, RAM_SIZE, 0)], [os.dup(fd)])
    dev = StandinDevice(memory, Interrupt())
    yield dev, fd
    memory.close()
    os.close(fd)


def enable_bus_master(dev):
    dev.cfg_write(0x04, dev.cfg_read(0x04, 2) | 0x4, 2)


def test_identity_is_read_only(device):
    dev, _ = device
    assert dev.cfg_read(0x00, 4) == 0x7E571AF4
    assert dev.cfg_read(0x08, 4) == 0xFF000001           # class 0xff0000, revision 1
    assert dev.cfg_read(0x0E, 1) == 0x00                 # type 0 header, single function
    assert dev.cfg_read(0x3D, 1) == 1                    # INTA#
    assert dev.cfg_read(0x06, 2) & 0x10 == 0             # no capability list
    dev.cfg_write(0x00, 0xFFFFFFFF, 4)
    dev.cfg_write(0x08, 0, 4)
    dev.cfg_write(0x3D, 4, 1)
    assert dev.cfg_read(0x00, 4) == 0x7E571AF4
    assert dev.cfg_read(0x08, 4) == 0xFF000001
    assert dev.cfg_read(0x3D, 1) == 1


def test_bar0_sizing_and_placement(device):
    dev, _ = device
    dev.cfg_write(0x10, 0xFFFFFFFF, 4)
    assert dev.cfg_read(0x10, 4) == (~(BAR0_SIZE - 1)) & 0xFFFFFFFF    # 32-bit, non-prefetchable
    dev.cfg_write(0x10, 0xFEBFF123, 4)
    assert dev.cfg_read(0x10, 4) == 0xFEBFF000
    dev.cfg_write(0x13, 0xC0, 1)                          # a byte write to the top byte
    assert dev.cfg_read(0x10, 4) == 0xC0BFF000
    for reg in (0x14, 0x18, 0x1C, 0x20, 0x24, 0x28, 0x30):
        dev.cfg_write(reg, 0xFFFFFFFF, 4)
        assert dev.cfg_read(reg, 4) == 0, f"register {reg:#x} must be unimplemented"


def test_command_register_writable_bits(device):
    dev, _ = device
    dev.cfg_write(0x04, 0xFFFF, 2)
    # memory, bus master, parity error response, SERR#, interrupt disable; no I/O BAR
    assert dev.cfg_read(0x04, 2) == 0x0546
    dev.cfg_write(0x3C, 0x0B, 1)
    assert dev.cfg_read(0x3C, 1) == 0x0B


def test_reset_restores_power_on_state(device):
    dev, _ = device
    dev.cfg_write(0x10, 0xFEBFF000, 4)
    dev.cfg_write(0x04, 0x6, 2)
    dev.bar_write(0, Reg.SCRATCH, 0x1234, 4)
    dev.reset()
    assert dev.cfg_read(0x10, 4) == 0 and dev.cfg_read(0x04, 2) == 0
    assert dev.bar_read(0, Reg.SCRATCH, 4) == 0
    assert dev.bar_read(0, Reg.MAGIC, 4) == MAGIC


def test_register_accesses_of_every_size(device):
    dev, _ = device
    assert dev.bar_read(0, Reg.MAGIC, 4) == MAGIC
    assert dev.bar_read(0, Reg.MAGIC + 2, 2) == MAGIC >> 16
    dev.bar_write(0, Reg.MAGIC, 0, 4)
    assert dev.bar_read(0, Reg.MAGIC, 4) == MAGIC
    dev.bar_write(0, Reg.SCRATCH, 0x11223344, 4)
    dev.bar_write(0, Reg.SCRATCH + 3, 0xAA, 1)
    assert dev.bar_read(0, Reg.SCRATCH, 4) == 0xAA223344
    dev.bar_write(0, Reg.SCRATCH64, 0x0102030405060708, 8)
    assert dev.bar_read(0, Reg.SCRATCH64, 8) == 0x0102030405060708
    assert dev.bar_read(0, Reg.SCRATCH64 + 4, 4) == 0x01020304
    assert dev.bar_read(0, Reg.SCRATCH64 + 3, 2) == 0x0405              # across the halves
    assert dev.bar_read(0, 0x800, 4) == 0                                # a hole
    assert dev.bar_read(0, 0xFFE, 4) == 0xFFFFFFFF                       # leaves the BAR


def test_dma_copies_guest_memory(device):
    dev, fd = device
    enable_bus_master(dev)
    data = os.urandom(5000)
    os.pwrite(fd, data, 0x1003)
    dev.bar_write(0, Reg.DMA_SRC, RAM_BASE + 0x1003, 8)
    dev.bar_write(0, Reg.DMA_DST, RAM_BASE + 0x20001, 4)                # low half ...
    dev.bar_write(0, Reg.DMA_DST + 4, 0, 4)                              # ... and high half
    dev.bar_write(0, Reg.DMA_LEN, len(data), 4)
    dev.bar_write(0, Reg.DMA_CTRL, CTRL_START, 4)
    assert dev.bar_read(0, Reg.DMA_CTRL, 4) == CTRL_DONE
    assert os.pread(fd, len(data) + 2, 0x20000) == b"\0" + data + b"\0"
    assert dev.bar_read(0, Reg.DMA_COUNT, 4) == 1
    assert dev.copies == [(RAM_BASE + 0x1003, RAM_BASE + 0x20001, 5000,
                           hashlib.sha256(data).hexdigest())]


@pytest.mark.parametrize("bus_master, src, length", [
    (False, RAM_BASE, 16),                          # Bus Master Enable clear
    (True, RAM_BASE, 0),                            # empty
    (True, RAM_BASE, DMA_MAX_LEN + 1),              # too long
    (True, RAM_BASE + RAM_SIZE - 8, 16),            # runs off the end of RAM
    (True, 0x4000_0000, 16),                        # no RAM there
])
def test_dma_refusals_write_nothing(device, bus_master, src, length):
    dev, fd = device
    if bus_master:
        enable_bus_master(dev)
    os.pwrite(fd, b"\x77" * 64, 0)
    dev.bar_write(0, Reg.DMA_SRC, src, 8)
    dev.bar_write(0, Reg.DMA_DST, RAM_BASE + 0x10000, 8)
    dev.bar_write(0, Reg.DMA_LEN, length, 4)
    dev.bar_write(0, Reg.DMA_CTRL, CTRL_START, 4)
    assert dev.bar_read(0, Reg.DMA_CTRL, 4) == CTRL_DONE | CTRL_ERROR
    assert dev.bar_read(0, Reg.DMA_COUNT, 4) == 0
    assert os.pread(fd, 64, 0x10000) == b"\0" * 64
    assert dev.copies[-1][3] is None


def test_intx_follows_status_enable_and_interrupt_disable(device):
    dev, _ = device
    enable_bus_master(dev)
    irq = dev.interrupt

    def copy():
        dev.bar_write(0, Reg.DMA_SRC, RAM_BASE, 8)
        dev.bar_write(0, Reg.DMA_DST, RAM_BASE + 0x100, 8)
        dev.bar_write(0, Reg.DMA_LEN, 4, 4)
        dev.bar_write(0, Reg.DMA_CTRL, CTRL_START, 4)

    copy()                                                # not enabled: pending only in IRQ_STATUS
    assert dev.bar_read(0, Reg.IRQ_STATUS, 4) == IRQ_DMA_DONE
    assert not irq.level and dev.cfg_read(0x06, 2) & 0x8 == 0
    dev.bar_write(0, Reg.IRQ_ENABLE, IRQ_DMA_DONE, 4)     # enabling a pending cause raises INTx
    assert irq.level and irq.assertions == 1 and dev.cfg_read(0x06, 2) & 0x8
    dev.bar_write(0, Reg.IRQ_STATUS, IRQ_DMA_DONE, 4)     # write 1 to clear
    assert not irq.level and dev.cfg_read(0x06, 2) & 0x8 == 0
    dev.cfg_write(0x04, dev.cfg_read(0x04, 2) | 0x400, 2)  # Interrupt Disable
    copy()
    assert not irq.level and dev.cfg_read(0x06, 2) & 0x8   # shown as pending, line stays low
    dev.cfg_write(0x04, dev.cfg_read(0x04, 2) & ~0x400, 2)
    assert irq.level and irq.assertions == 2
