"""The proxy-protocol server against a fake QEMU on a socket pair.

The fake peer builds every message by hand from the C structures of QEMU 7.2
(``include/hw/remote/mpqemu-link.h``), not with the module's own encoders, so a wrong layout in
``sim/linux/proxy.py`` fails here.
"""
import asyncio
import mmap
import os
import select
import socket
import struct
import threading

import pytest

from sim.linux.proxy import (BarMap, BarRead, BarWrite, CfgRead, CfgWrite, DeviceReset,
                             GuestMemory, GuestMemoryError, MemoryRegion, ProtocolError,
                             ProxyServer)

# MPQemuCmd values and struct layouts, from the C header.
SYNC_SYSMEM, RET, CFGWRITE, CFGREAD, BAR_WRITE, BAR_READ, SET_IRQFD, DEVICE_RESET = range(8)


def header(cmd: int, size: int) -> bytes:
    return struct.pack("<i", cmd) + b"\xee" * 4 + struct.pack("<Q", size)   # padding is junk


def conf(addr: int, val: int, length: int) -> bytes:
    return struct.pack("<IIi", addr, val, length)


def bar(addr: int, val: int, size: int, memory: bool = True) -> bytes:
    return struct.pack("<QQIB", addr, val, size, int(memory)) + b"\0\0\0"


def sysmem(regions: list[tuple[int, int, int]]) -> bytes:
    gpas = [r[0] for r in regions] + [0] * (8 - len(regions))
    sizes = [r[1] for r in regions] + [0] * (8 - len(regions))
    offsets = [r[2] for r in regions] + [0] * (8 - len(regions))
    return struct.pack("<8Q8Q8q", *gpas, *sizes, *offsets)


class FakeQemu:
    """The QEMU end: sends hand-built messages, reads RET replies."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def send(self, cmd: int, payload: bytes = b"", fds=()) -> None:
        data = header(cmd, len(payload)) + payload
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)

    def ret(self) -> int:
        self.sock.settimeout(10)
        data = b""
        while len(data) < 24:
            chunk = self.sock.recv(24 - len(data))
            assert chunk, "server closed the socket instead of answering"
            data += chunk
        cmd, = struct.unpack_from("<i", data, 0)
        size, value = struct.unpack_from("<QQ", data, 8)
        assert (cmd, size) == (RET, 8)
        return value

    def request(self, cmd: int, payload: bytes) -> int:
        self.send(cmd, payload)
        return self.ret()

    def cfg_read(self, addr, length):
        return self.request(CFGREAD, conf(addr, 0, length))

    def cfg_write(self, addr, val, length):
        return self.request(CFGWRITE, conf(addr, val, length))


class RecordingDevice:
    """A backend with one 32-bit memory BAR0 of 256 bytes and a byte array behind it."""

    def __init__(self, memory=None, interrupt=None):
        self.calls = []
        self.bar0 = 0
        self.regs = bytearray(256)
        self.interrupt = interrupt
        self.memory = memory

    def cfg_read(self, addr, size):
        self.calls.append(("cfg_read", addr, size))
        if addr == 0x10:
            return self.bar0
        return 0x1234ABCD & ((1 << 8 * size) - 1) if addr == 0 else 0

    def cfg_write(self, addr, value, size):
        self.calls.append(("cfg_write", addr, value, size))
        if addr == 0x10:
            self.bar0 = value & ~0xFF & 0xFFFFFFFF

    def bar_read(self, bar, offset, size):
        self.calls.append(("bar_read", bar, offset, size))
        return int.from_bytes(self.regs[offset:offset + size], "little")

    def bar_write(self, bar, offset, value, size):
        self.calls.append(("bar_write", bar, offset, value, size))
        self.regs[offset:offset + size] = value.to_bytes(size, "little")
        if offset == 0xF0 and self.interrupt is not None:
            self.interrupt.set_level(value & 1)

    def reset(self):
        self.calls.append(("reset",))
        self.bar0 = 0

    def settle(self):
        self.calls.append(("settle",))


@pytest.fixture
def link():
    """(fake QEMU, server, device) with the server running in a thread."""
    qemu_end, dev_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server = ProxyServer(dev_end)
    device = RecordingDevice(server.memory, server.interrupt)
    errors = []

    def serve():
        try:
            server.serve(device, poll=0.05)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield FakeQemu(qemu_end), server, device, errors
    qemu_end.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    server.close()


def probe_bar0(qemu: FakeQemu) -> None:
    """QEMU's realize-time probe of BAR0 (hw/remote/proxy.c, probe_pci_info)."""
    orig = qemu.cfg_read(0x10, 4)
    qemu.cfg_write(0x10, 0xFFFFFFFF, 4)
    qemu.cfg_read(0x10, 4)
    qemu.cfg_write(0x10, orig, 4)


def test_struct_sizes_match_the_c_layout():
    from sim.linux import proxy
    assert proxy.HEADER.size == 16
    assert proxy.CONF_DATA.size == 12
    assert proxy.BAR_ACCESS.size == 24
    assert proxy.SYNC_SYSMEM.size == 192 == proxy.MAX_PAYLOAD


def test_config_read_and_write_are_forwarded_and_answered(link):
    qemu, server, device, errors = link
    assert qemu.cfg_read(0, 2) == 0xABCD
    assert qemu.cfg_read(0, 4) == 0x1234ABCD
    assert qemu.cfg_write(0x3C, 0x0B, 1) == 0
    qemu.cfg_read(0, 1)     # settle runs after the answer: a further round trip orders it
    assert device.calls[:6] == [("cfg_read", 0, 2), ("settle",), ("cfg_read", 0, 4), ("settle",),
                                ("cfg_write", 0x3C, 0x0B, 1), ("settle",)]
    assert not errors


def test_bar_base_is_learned_and_bar_accesses_are_relative(link):
    qemu, server, device, errors = link
    probe_bar0(qemu)
    assert server.bars.size[0] == 0x100 and not server.bars.io[0]
    qemu.cfg_write(0x10, 0xFEBFF000, 4)           # what SeaBIOS does next
    assert server.bars.base[0] == 0xFEBFF000
    qemu.request(BAR_WRITE, bar(0xFEBFF010, 0x1122334455667788, 8))
    assert qemu.request(BAR_READ, bar(0xFEBFF014, 0, 4)) == 0x11223344
    assert ("bar_write", 0, 0x10, 0x1122334455667788, 8) in device.calls
    assert ("bar_read", 0, 0x14, 4) in device.calls
    assert not errors


def test_access_outside_every_bar_reads_all_ones_without_the_device(link):
    qemu, server, device, errors = link
    probe_bar0(qemu)
    qemu.cfg_write(0x10, 0xFEBFF000, 4)
    before = len(device.calls)
    assert qemu.request(BAR_READ, bar(0xFEBFF100, 0, 2)) == 0xFFFF      # just past the BAR
    assert qemu.request(BAR_READ, bar(0xFEBFF000, 0, 4, memory=False)) == 0xFFFFFFFF  # I/O space
    assert qemu.request(BAR_WRITE, bar(0x1000, 5, 4)) == 0
    assert [c for c in device.calls[before:] if c[0] != "settle"] == []
    assert not errors


def test_device_reset_resets_the_device_and_the_bar_bases(link):
    qemu, server, device, errors = link
    probe_bar0(qemu)
    qemu.cfg_write(0x10, 0xFEBFF000, 4)
    assert qemu.request(DEVICE_RESET, b"") == 0
    assert ("reset",) in device.calls
    assert server.bars.base[0] == 0 and server.bars.size[0] == 0x100
    assert not errors


def test_message_split_into_single_bytes_with_fds_on_the_first(link):
    qemu, server, device, errors = link
    fd = os.memfd_create("ram")
    os.ftruncate(fd, 0x2000)
    payload = header(SYNC_SYSMEM, 192) + sysmem([(0x100000, 0x2000, 0)])
    socket.send_fds(qemu.sock, [payload[:1]], [fd])
    for i in range(1, len(payload)):
        qemu.sock.sendall(payload[i:i + 1])
    os.pwrite(fd, b"hello", 0x10)
    assert qemu.cfg_read(0, 2) == 0xABCD        # answered after the map was taken
    assert server.memory.read(0x100010, 5) == b"hello"
    os.close(fd)
    assert not errors


def test_sync_sysmem_maps_guest_memory_and_remaps_without_leaking_fds(link):
    qemu, server, device, errors = link
    low, high = os.memfd_create("low"), os.memfd_create("high")
    os.ftruncate(low, 0xA0000)
    os.ftruncate(high, 0x200000)
    qemu.send(SYNC_SYSMEM, sysmem([(0, 0xA0000, 0), (0x100000, 0x100000, 0x100000)]), [low, high])
    qemu.cfg_read(0, 2)                              # a round trip: the map is in place
    assert server.memory.regions == [MemoryRegion(0, 0xA0000, 0),
                                     MemoryRegion(0x100000, 0x100000, 0x100000)]
    os.pwrite(high, b"\x5a" * 4, 0x100000 + 0x1234)  # section offset 0x100000 in its fd
    assert server.memory.read(0x101234, 4) == b"\x5a" * 4
    server.memory.write(0x9FFFC, b"abcd")
    assert os.pread(low, 4, 0x9FFFC) == b"abcd"
    with pytest.raises(GuestMemoryError):
        server.memory.read(0x9FFFE, 4)               # runs into the hole at 0xA0000
    with pytest.raises(GuestMemoryError):
        server.memory.write(0x200000, b"x")          # past the end of RAM
    qemu.send(SYNC_SYSMEM, sysmem([(0, 0xA0000, 0)]), [low])   # resent on every change
    qemu.cfg_read(0, 2)
    open_fds = len(os.listdir("/proc/self/fd"))
    for _ in range(4):
        qemu.send(SYNC_SYSMEM, sysmem([(0, 0xA0000, 0)]), [low])
        qemu.cfg_read(0, 2)
    assert len(os.listdir("/proc/self/fd")) == open_fds     # each old map's fds were closed
    assert server.memory.generation == 6
    assert not server.memory.contains(0x100000)
    os.close(low)
    os.close(high)
    assert not errors


def test_intx_writes_the_irqfd_and_resample_raises_it_again(link):
    qemu, server, device, errors = link
    irqfd, resamplefd = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0, os.EFD_NONBLOCK)
    qemu.send(SET_IRQFD, b"", [irqfd, resamplefd])
    probe_bar0(qemu)
    qemu.cfg_write(0x10, 0xFEBFF000, 4)
    qemu.request(BAR_WRITE, bar(0xFEBFF0F0, 1, 4))   # the device raises INTx
    assert os.eventfd_read(irqfd) == 1
    qemu.request(BAR_WRITE, bar(0xFEBFF0F0, 1, 4))   # still high: no second edge
    with pytest.raises(BlockingIOError):
        os.eventfd_read(irqfd)
    os.eventfd_write(resamplefd, 1)                  # the guest acknowledged; line still high
    assert select.select([irqfd], [], [], 5)[0] == [irqfd]
    assert os.eventfd_read(irqfd) == 1
    qemu.request(BAR_WRITE, bar(0xFEBFF0F0, 0, 4))   # lowered: resample does nothing now
    os.eventfd_write(resamplefd, 1)
    qemu.cfg_read(0, 2)
    assert select.select([irqfd], [], [], 0.2)[0] == []
    assert server.interrupt.assertions == 1 and server.interrupt.signals == 2
    os.close(irqfd)
    os.close(resamplefd)
    assert not errors


@pytest.mark.parametrize("message, reason", [
    (header(42, 0), "unknown command 42"),
    (header(CFGREAD, 193), "payload of 193 bytes"),
    (header(CFGREAD, 8) + b"\0" * 8, "PCI_CFGREAD with 8 payload bytes"),
    (header(CFGREAD, 12) + conf(0, 0, 3), "configuration access of 3 bytes"),
    (header(BAR_READ, 24) + bar(0, 0, 3), "BAR access of 3 bytes"),
    (header(SET_IRQFD, 0), "SET_IRQFD with 0 payload bytes and 0 fds"),
    (header(RET, 8) + b"\0" * 8, "RET, which a device never receives"),
], ids=["unknown-command", "oversized", "short-payload", "cfg-size", "bar-size", "irqfd-no-fds",
        "ret"])
def test_protocol_violations_stop_the_server(link, message, reason):
    qemu, server, device, errors = link
    qemu.sock.sendall(message)
    for _ in range(100):
        if errors:
            break
        threading.Event().wait(0.05)
    assert len(errors) == 1 and isinstance(errors[0], ProtocolError)
    assert reason in str(errors[0])


def test_eof_ends_serve():
    qemu_end, dev_end = socket.socketpair()
    server = ProxyServer(dev_end)
    qemu_end.close()
    server.serve(RecordingDevice())                  # returns instead of blocking
    server.close()


class AsyncDevice(RecordingDevice):
    """The same device with coroutine methods, as a cocotb backend will have."""

    async def cfg_read(self, addr, size):
        await asyncio.sleep(0)
        return super().cfg_read(addr, size)

    async def cfg_write(self, addr, value, size):
        super().cfg_write(addr, value, size)

    async def bar_read(self, bar, offset, size):
        return super().bar_read(bar, offset, size)

    async def bar_write(self, bar, offset, value, size):
        super().bar_write(bar, offset, value, size)

    async def reset(self):
        super().reset()

    async def settle(self):
        super().settle()


def test_serve_async_drives_a_coroutine_backend():
    qemu_end, dev_end = socket.socketpair()
    server = ProxyServer(dev_end)
    device = AsyncDevice()
    results = {}

    def fake_qemu():
        qemu = FakeQemu(qemu_end)
        probe_bar0(qemu)
        qemu.cfg_write(0x10, 0xC0000000, 4)
        qemu.request(BAR_WRITE, bar(0xC0000020, 0xDEADBEEF, 4))
        results["read"] = qemu.request(BAR_READ, bar(0xC0000022, 0, 2))
        results["reset"] = qemu.request(DEVICE_RESET, b"")
        qemu_end.close()

    thread = threading.Thread(target=fake_qemu)
    thread.start()
    asyncio.run(server.serve_async(device))
    thread.join()
    server.close()
    assert results == {"read": 0xDEAD, "reset": 0}
    assert ("bar_write", 0, 0x20, 0xDEADBEEF, 4) in device.calls
    assert ("reset",) in device.calls


def test_handle_turns_requests_into_backend_calls():
    server = ProxyServer(socket.socketpair()[0])
    device = RecordingDevice()
    assert server.handle(CfgRead(0, 4), device) == 0x1234ABCD
    assert server.handle(CfgWrite(0x10, 0xFFFFFFFF, 4), device) == 0
    # The write is followed by a read-back of the BAR register, which sets the learned size.
    assert device.calls[-2:] == [("cfg_write", 0x10, 0xFFFFFFFF, 4), ("cfg_read", 0x10, 4)]
    assert server.bars.size[0] == 0x100
    assert server.handle(BarRead(None, 0, 4, 0x1234, True), device) == 0xFFFFFFFF
    assert server.handle(BarWrite(0, 8, 7, 1, 0x8, True), device) == 0
    assert server.handle(DeviceReset(), device) == 0
    assert device.calls[-1] == ("reset",)
    server.close()


def test_bar_map():
    assert BarMap.registers_touched(0x10, 4) == [0]
    assert BarMap.registers_touched(0x12, 4) == [0, 1]
    assert BarMap.registers_touched(0x0C, 8) == [0]
    assert BarMap.registers_touched(0x04, 2) == []
    assert BarMap.registers_touched(0x24, 4) == [5]
    assert BarMap.registers_touched(0x28, 4) == []
    bars = BarMap()
    bars.update(1, 0xFFFFFFFF, 0xFFFFFF01)           # I/O BAR of 256 ports
    bars.update(1, None, 0xC001)
    bars.update(2, 0xFFFFFFFF, 0xFFFF0000)           # 64 KiB memory BAR
    bars.update(2, 0xE0000000, 0xE0000000)
    assert bars.decode(0xC0FF, memory=False) == (1, 0xFF)
    assert bars.decode(0xC0FF, memory=True) is None
    assert bars.decode(0xE000FFFF, memory=True) == (2, 0xFFFF)
    assert bars.decode(0xE0010000, memory=True) is None


def test_guest_memory_spanning_adjacent_sections():
    fd1, fd2 = os.memfd_create("a"), os.memfd_create("b")
    for fd in (fd1, fd2):
        os.ftruncate(fd, mmap.PAGESIZE * 2)
    memory = GuestMemory()
    memory.remap([MemoryRegion(0x10000, mmap.PAGESIZE, mmap.PAGESIZE),
                  MemoryRegion(0x10000 + mmap.PAGESIZE, mmap.PAGESIZE, 0)], [fd1, fd2])
    data = bytes(range(256)) * 2
    memory.write(0x10000 + mmap.PAGESIZE - 256, data)   # 256 bytes in each section
    assert os.pread(fd1, 256, 2 * mmap.PAGESIZE - 256) == data[:256]
    assert os.pread(fd2, 256, 0) == data[256:]
    assert memory.read(0x10000 + mmap.PAGESIZE - 256, 512) == data
    with pytest.raises(GuestMemoryError):
        memory.write(0x10000 + 2 * mmap.PAGESIZE - 1, b"xy")   # one byte past the end
    assert os.pread(fd2, 1, mmap.PAGESIZE - 1) == b"\0"           # nothing was written
    memory.close()
