"""cocotb tests of PcieFunction through cocotbext-pcie's RootComplex (see test_pcie_function.py).

The TB class builds the clock, the root complex, the bridge, a register-client model behind
every BAR0 window and ``cfg_ext``, and the DMA port's stream ends. Expected values come from
the spec models (``sim.model.config_space``, ``sim.model.tlp``) and from the tests' own record
of what was written, never from the RTL.
"""
from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, SimTimeoutError, with_timeout
from cocotbext.pcie.core import RootComplex
from cocotbext.pcie.core.tlp import CplStatus, Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId

from hdl.pcie.bar_completer import BarCounters
from hdl.pcie.spec import (CapId, Cfg, FunctionControl, MsgCode, MsixCap, PcieCap,
                           TlpFmtType)
from sim.example_function import WINDOWS, virtio_vendor_caps
from sim.layout import unpack
from sim.model import tlp as model
from sim.model.config_space import ConfigSpaceModel
from sim.pcie_bridge import PcieBridge
from sim.register_client import RegisterClientModel, TlpStreamSink, TlpStreamSource

CLK_NS = 4
BAR_SIZE = 0x8000
MAX_READ_DW = 16
TIMEOUT_US = 200


class TB:
    def __init__(self, dut, *, rx_idle=0.0, tx_backpressure=0.0, cpl_backpressure=0.0,
                 max_wait=2):
        self.dut = dut
        self.log = dut._log
        self.params = json.loads(os.environ["DUT_PARAMS"])
        p = self.params
        self.width = p["width"]
        self.msix_vectors = p["msix_vectors"]
        self.rng = random.Random(random.getrandbits(32))    # cocotb seeds random from SEED
        Clock(dut.clk, CLK_NS, unit="ns").start()

        self.rc = RootComplex()
        self.bridge = PcieBridge(dut, dut.clk, width=self.width, link_speed=p["link_speed"],
                                 link_width=p["link_width"], rx_idle=rx_idle,
                                 tx_backpressure=tx_backpressure, rng=self.rng)
        self.rc.make_port().connect(self.bridge)
        self.tx_log: list[tuple[dict, list[int]]] = []
        self.bridge.tx_observers.append(lambda h, pl: self.tx_log.append((h, pl)))

        self.clients = {w.name: RegisterClientModel(dut, f"regs__{w.name}", dut.clk, w.size,
                                                    max_wait=max_wait, rng=self.rng)
                        for w in WINDOWS}
        self.cfg_ext = RegisterClientModel(dut, "cfg_ext", dut.clk, 256, max_wait=max_wait,
                                           rng=self.rng)
        self.dma = TlpStreamSource(dut, "dma_req", dut.clk, width=self.width, idle=rx_idle,
                                   rng=self.rng)
        self.cpl = TlpStreamSink(dut, "dma_cpl", dut.clk, width=self.width,
                                 backpressure=cpl_backpressure, rng=self.rng)
        caps = virtio_vendor_caps()
        self.model = ConfigSpaceModel(
            bar_size=BAR_SIZE, bar_64bit=p["bar_64bit"], msix_vectors=self.msix_vectors,
            vendor_caps=[(bytes(c.body), c.forward) for c in caps],
            link_speed=p["link_speed"], link_width=p["link_width"])
        self.vendor_caps = caps
        dut.intx.value = 0
        dut.dma_pending.value = 0
        dut.function_reset.value = 0
        if self.msix_vectors:
            dut.msix__valid.value = 0
            dut.msix__payload.value = 0
        self.dev = None

    # --- set-up ---------------------------------------------------------------------------
    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 10)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 10)

    def preset_cfg_ext(self, offsets):
        """The transport serves the forwarded DWs; its reset values are the caps' bytes."""
        self.cfg_ext.mem[:] = bytes(256)
        for cap, off in zip(self.vendor_caps, offsets):
            raw = bytes([CapId.VENDOR, 0]) + bytes(cap.body)
            for b in cap.forward:
                self.cfg_ext.mem[off + b] = raw[b] if b < len(raw) else 0

    async def function_reset(self, vendor_offsets):
        self.dut.function_reset.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.function_reset.value = 0
        self.preset_cfg_ext(vendor_offsets)
        await ClockCycles(self.dut.clk, 80)     # MSI-X table clear

    async def enumerate(self):
        await self.reset()
        await self.rc.enumerate()
        self.dev = self.find_function()
        assert self.dev is not None, "the root complex did not find the function"
        self.dev_id = self.dev.pcie_id

    def find_function(self):
        def walk(bus):
            for d in bus.devices:
                if not d.is_bridge() and d.vendor_id == self.model.vendor_id:
                    return d
            for child in bus.children:
                found = walk(child)
                if found:
                    return found
            return None
        return walk(self.rc.host_bridge.bus)

    async def enable(self):
        await self.dev.enable_device()
        await self.dev.set_master()

    def control(self) -> dict:
        return unpack(FunctionControl, int(self.dut.control.value))

    def counters(self) -> dict:
        return unpack(BarCounters, int(self.dut.counters.value))

    @property
    def bar(self):
        return self.dev.bar_window[0]

    @property
    def bar_addr(self):
        return self.dev.bar_addr[0]

    def cap_offset(self, cap_id: int) -> int:
        """Offset of the first capability with this ID, from the root complex's walk."""
        return next(off for cid, off in self.dev.capabilities if cid == cap_id)

    async def cfg_read(self, index: int) -> int:
        return await self.rc.config_read_dword(self.dev_id, 4 * index)

    async def cfg_write(self, index: int, data: int, be: int = 0xF):
        """A CfgWr with arbitrary byte enables (the root complex API writes byte runs)."""
        req = Tlp()
        req.fmt_type = TlpType.CFG_WRITE_1
        req.requester_id = PcieId(0, 0, 0)
        req.completer_id = self.dev_id
        req.address = 4 * index
        req.first_be = be
        req.length = 1
        req.data = bytearray(data.to_bytes(4, "little"))
        cpls = await self.rc.perform_nonposted_operation(req, TIMEOUT_US, "us")
        assert cpls and cpls[0].status == CplStatus.SC

    async def walk_caps(self) -> list[tuple[int, int]]:
        caps, ptr, seen = [], (await self.cfg_read(Cfg.CAP_PTR // 4)) & 0xFC, set()
        while ptr:
            assert ptr >= 0x40 and ptr not in seen, f"bad capability pointer {ptr:#x}"
            seen.add(ptr)
            dw = await self.cfg_read(ptr // 4)
            caps.append((dw & 0xFF, ptr))
            ptr = (dw >> 8) & 0xFC
        return caps

    async def nonposted(self, req: Tlp) -> list[Tlp]:
        req.requester_id = PcieId(0, 0, 0)
        return await self.rc.perform_nonposted_operation(req, TIMEOUT_US, "us")

    def mem_req(self, write: bool, addr: int, nbytes: int, data: bytes = b"") -> Tlp:
        req = Tlp()
        wide = addr >> 32
        if write:
            req.fmt_type = TlpType.MEM_WRITE_64 if wide else TlpType.MEM_WRITE
            req.set_addr_be_data(addr, data)
        else:
            req.fmt_type = TlpType.MEM_READ_64 if wide else TlpType.MEM_READ
            req.set_addr_be(addr, nbytes)
        return req

    async def injected_read(self, addr: int, nbytes: int, tag: int) -> tuple[dict, list[int]]:
        """MemRd driven straight into the RTL (for addresses the root complex cannot route)."""
        req = self.mem_req(False, addr, nbytes)
        req.tag = tag
        req.requester_id = PcieId(0, 0, 0)
        start = len(self.tx_log)
        self.bridge.inject(req)
        for _ in range(TIMEOUT_US * 1000 // CLK_NS):
            await RisingEdge(self.dut.clk)
            for hdr, payload in self.tx_log[start:]:
                if model.kind(hdr["fmt_type"]) == "completion" and hdr["tag"] == tag:
                    return hdr, payload
        raise AssertionError(f"no completion for injected read tag {tag}")

    async def settle(self, cycles=200):
        await ClockCycles(self.dut.clk, cycles)

    async def fire_msix(self, vector: int):
        await RisingEdge(self.dut.clk)
        self.dut.msix__payload.value = vector
        self.dut.msix__valid.value = 1
        await ReadOnly()
        while not self.dut.msix__ready.value:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
        await RisingEdge(self.dut.clk)
        self.dut.msix__valid.value = 0


def expected_byte_count(addr: int, nbytes: int) -> tuple[int, int]:
    """(Byte Count, Lower Address) of a read of nbytes at addr (PCIe Base §2.3.1.1)."""
    return max(nbytes, 1), addr & 0x7F


# --- tests -------------------------------------------------------------------------------

@cocotb.test(timeout_time=20, timeout_unit="ms")
async def test_enumeration_and_config_space(dut):
    """IDs, capability walk and every config register against the spec model; RO after
    all-ones writes; random byte-enable writes; function reset restores the defaults."""
    tb = TB(dut)
    await tb.enumerate()
    dev, m = tb.dev, tb.model
    assert (dev.vendor_id, dev.device_id) == (m.vendor_id, m.device_id)
    assert (dev.revision_id, dev.class_code) == (m.revision_id, m.class_code)
    assert (dev.subsystem_vendor_id, dev.subsystem_id) == (m.subsystem_vendor_id,
                                                           m.subsystem_id)
    assert dev.bar_size[0] == BAR_SIZE, f"BAR0 sized as {dev.bar_size[0]:#x}"
    assert bool(dev.bar_raw[0] & 0b100) == tb.params["bar_64bit"]
    assert dev.bar_raw[0] & 0b1001 == 0        # memory, non-prefetchable
    sized = [i for i in range(6) if dev.bar_size[i]]
    assert sized == [0], f"BARs sized: {sized}"
    assert [cid for cid, _ in dev.capabilities] == m.expected_capabilities()
    assert dev.ext_capabilities == []
    # What enumeration configured reaches FunctionControl.
    ctl = tb.control()
    assert ctl["requester_id"] == int(dev.pcie_id)
    assert ctl["ext_tag_en"] == 1
    assert ctl["max_payload_size"] == min(m.max_payload_size_supported, tb.rc.max_payload_size)

    caps = await tb.walk_caps()
    assert caps == dev.capabilities
    vendor_offsets = [off for cid, off in caps if cid == CapId.VENDOR]
    await tb.function_reset(vendor_offsets)
    assert tb.control() == {k: 0 for k in tb.control()} | {"max_read_request_size": 2}

    async def check_all(img, what):
        for index in list(range(64)) + [64, 65, 0x3FF]:
            got = await tb.cfg_read(index)
            assert got == img.dw(index), \
                f"{what}: config DW {4 * index:#05x} = {got:#010x}, model {img.dw(index):#010x}"

    img = m.image(caps)
    await check_all(img, "after reset")

    # Random writes with random byte enables, each checked against the model.
    for _ in range(60):
        index = tb.rng.randrange(64)
        data, be = tb.rng.randrange(1 << 32), tb.rng.randrange(1, 16)
        await tb.cfg_write(index, data, be)
        img.write(index, data, be)
        got = await tb.cfg_read(index)
        assert got == img.dw(index), \
            f"after write {data:#010x}/{be:#x} to {4 * index:#04x}: {got:#010x} != {img.dw(index):#010x}"

    # All ones everywhere: read-only fields must not move.
    for index in range(64):
        await tb.cfg_write(index, 0xFFFF_FFFF)
        img.write(index, 0xFFFF_FFFF, 0xF)
    await check_all(img, "after all-ones writes")

    await tb.function_reset(vendor_offsets)
    await check_all(m.image(caps), "after function reset")
    assert tb.control() == {k: 0 for k in tb.control()} | {"max_read_request_size": 2}


@cocotb.test(timeout_time=40, timeout_unit="ms")
async def test_mmio_widths_and_alignments(dut):
    """Reads and writes of 1, 2, 4, 8 bytes at every alignment and multi-DW bursts reach the
    right client with the right byte enables; data round-trips; long reads get CA."""
    tb = TB(dut, max_wait=3)
    await tb.enumerate()
    await tb.enable()
    shadow = {w.name: bytearray(w.size) for w in WINDOWS}

    async def write(w, off, data):
        await tb.bar.write(w.offset + off, data)
        shadow[w.name][off:off + len(data)] = data

    async def read_check(w, off, n):
        got = await tb.bar.read(w.offset + off, n)
        assert got == bytes(shadow[w.name][off:off + n]), \
            f"{w.name}+{off:#x} len {n}: {got.hex()} != {shadow[w.name][off:off + n].hex()}"

    for w in WINDOWS:
        for size in (1, 2, 4, 8):
            for align in range(8):
                off = 0x40 + 16 * align + align
                await write(w, off, bytes(tb.rng.randrange(256) for _ in range(size)))
                await read_check(w, off, size)
    for _ in range(40):
        w = tb.rng.choice(WINDOWS)
        n = tb.rng.randint(1, 4 * MAX_READ_DW - 3)
        off = tb.rng.randrange(0, w.size - n - 3)
        await write(w, off, bytes(tb.rng.randrange(256) for _ in range(n)))
        await read_check(w, off, n)
    for w in WINDOWS:
        assert tb.clients[w.name].mem == shadow[w.name], f"{w.name} client memory differs"

    # Exactly the enabled bytes reach the client: a 1-byte read at offset 3 of a DW.
    client = tb.clients["device"]
    client.accesses.clear()
    await tb.bar.read(0x2000 + 0x103, 1)
    assert [(a.write, a.addr, a.be) for a in client.accesses] == [(False, 0x40, 0b1000)]
    client.accesses.clear()
    await tb.bar.write(0x2000 + 0x106, b"\x11\x22\x33\x44\x55")     # bytes 6..10
    await tb.settle()
    assert [(a.write, a.addr, a.be) for a in client.accesses] == \
        [(True, 0x41, 0b1100), (True, 0x42, 0b0111)]

    # Byte Count / Lower Address of a successful read (root complex also checks them).
    for addr_off, n in ((0x0101, 2), (0x0006, 7), (0x007F, 1), (0x0000, 4 * MAX_READ_DW)):
        cpls = await tb.nonposted(tb.mem_req(False, tb.bar_addr + addr_off, n))
        assert len(cpls) == 1 and cpls[0].status == CplStatus.SC
        bc, la = expected_byte_count(tb.bar_addr + addr_off, n)
        assert (cpls[0].byte_count, cpls[0].lower_address) == (bc, la)
        assert cpls[0].completer_id == tb.dev_id

    # Longer than max_read_dw: Completer Abort, no register read, Signaled Target Abort.
    client = tb.clients["common"]
    client.accesses.clear()
    ca_before = tb.counters()["ca_sent"]
    cpls = await tb.nonposted(tb.mem_req(False, tb.bar_addr + 0x100, 4 * MAX_READ_DW + 4))
    assert len(cpls) == 1 and cpls[0].status == CplStatus.CA
    assert cpls[0].byte_count == 4 * MAX_READ_DW + 4
    assert client.accesses == []
    assert tb.counters()["ca_sent"] == ca_before + 1
    status = (await tb.cfg_read(Cfg.COMMAND // 4)) >> 16
    assert status & Cfg.STS_SIGNALED_TARGET_ABORT, "Signaled Target Abort not set"

    if tb.params["bar_64bit"]:
        # Move BAR0 above 4 GiB and use 4 DW requests (injected: the RC model routes only
        # its own windows).
        high = 0x12_3450_0000
        await tb.cfg_write(Cfg.BAR0 // 4, (high & 0xFFFF_FFFF) | 0b100)
        await tb.cfg_write(Cfg.BAR0 // 4 + 1, high >> 32)
        tb.bridge.inject(model.empty_header() | dict(
            fmt_type=TlpFmtType.MWR64.value, length=1, first_be=0xF, addr=high + 0x3010),
            [0xCAFEF00D])
        hdr, payload = await tb.injected_read(high + 0x3010, 4, tag=7)
        assert hdr["status"] == 0 and payload == [0xCAFEF00D]
        assert tb.clients["notify"].read_dw(0x10 // 4) == 0xCAFEF00D
    else:
        # A 4 DW address with upper bits set can never hit a 32-bit BAR.
        hdr, _ = await tb.injected_read((1 << 32) | tb.bar_addr, 4, tag=9)
        assert hdr["status"] == CplStatus.UR


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def test_unsupported_requests(dut):
    """UR for unmapped offsets, Memory Space off, I/O and other function numbers; posted
    writes there are dropped and counted; poisoned writes never reach a client."""
    tb = TB(dut)
    await tb.enumerate()
    await tb.enable()
    base = tb.bar_addr

    async def expect_ur(req, what):
        cpls = await tb.nonposted(req)
        assert len(cpls) == 1 and cpls[0].status == CplStatus.UR, f"{what}: {cpls}"
        assert cpls[0].fmt_type == TlpType.CPL
        return cpls[0]

    msix_gap = 0x4100 if tb.msix_vectors else 0x4000     # past the MSI-X Table window
    # 4038h+16 runs past the end of the MSI-X Table window (or is unmapped without MSI-X).
    for off in (0x6000, 0x7FFC, msix_gap, 0x4038):
        n = 16 if off == 0x4038 else 4
        cpl = await expect_ur(tb.mem_req(False, base + off, n), f"read at {off:#x}")
        bc, la = expected_byte_count(base + off, n)
        assert (cpl.byte_count, cpl.lower_address) == (bc, la)

    before = tb.counters()
    snapshot = {k: bytes(c.mem) for k, c in tb.clients.items()}
    await tb.rc.mem_write(base + 0x6000, b"\xAA" * 4)
    await tb.rc.mem_write(base + 0x4038, b"\xBB" * 16)
    await tb.settle()
    assert tb.counters()["posted_dropped"] == before["posted_dropped"] + 2
    assert {k: bytes(c.mem) for k, c in tb.clients.items()} == snapshot

    # Poisoned write: dropped, counted, Detected Parity Error logged.
    req = tb.mem_req(True, base + 0x10, 0, b"\x01\x02\x03\x04")
    req.ep = True
    await tb.rc.send(req)
    await tb.settle()
    assert tb.counters()["poisoned_dropped"] == before["poisoned_dropped"] + 1
    assert tb.clients["common"].mem[0x10:0x14] == snapshot["common"][0x10:0x14]
    status = (await tb.cfg_read(Cfg.COMMAND // 4)) >> 16
    assert status & (1 << 15), "Detected Parity Error not set"

    # I/O request to an endpoint without I/O BARs.
    io = Tlp()
    io.fmt_type = TlpType.IO_READ
    io.set_addr_be(0x1000, 4)
    tb.bridge.inject(io)
    await tb.settle()
    assert any(h["fmt_type"] == TlpFmtType.CPL.value and h["status"] == CplStatus.UR
               for h, _ in tb.tx_log[-3:])

    # Another function number of this single-function device.
    val = await tb.rc.config_read_dword(PcieId(tb.dev_id.bus, tb.dev_id.device, 1), 0)
    assert val == 0xFFFF_FFFF

    # Memory Space off: reads UR, writes dropped.
    cmd = await tb.cfg_read(Cfg.COMMAND // 4)
    await tb.cfg_write(Cfg.COMMAND // 4, cmd & ~Cfg.CMD_MEMORY_SPACE & 0xFFFF, 0b0011)
    assert tb.control()["memory_space_en"] == 0
    await expect_ur(tb.mem_req(False, base + 0x10, 4), "read with Memory Space off")
    await tb.rc.mem_write(base + 0x10, b"\xCC" * 4)
    await tb.settle()
    assert tb.clients["common"].mem[0x10:0x14] == snapshot["common"][0x10:0x14]

    pcie = tb.cap_offset(CapId.PCIE) // 4 + PcieCap.DEV_CTL // 4
    devsta = (await tb.cfg_read(pcie)) >> 16
    assert devsta & PcieCap.DEV_STA_UR_DETECTED
    # RW1C: writing 1 clears it.
    await tb.cfg_write(pcie, PcieCap.DEV_STA_UR_DETECTED << 16, 0b0100)
    assert not ((await tb.cfg_read(pcie)) >> 16) & PcieCap.DEV_STA_UR_DETECTED


@cocotb.test(timeout_time=40, timeout_unit="ms")
async def test_msix(dut):
    """MSI-X: delivery to the RC's MSI handler, per-vector mask + PBA + delivery on unmask,
    function mask, Bus Master Enable gating, 64-bit message address; INTx stays quiet."""
    tb = TB(dut)
    if not tb.msix_vectors:
        await tb.enumerate()
        msix_caps = [cid for cid, _ in tb.dev.capabilities if cid == CapId.MSIX]
        assert msix_caps == [], "INTx-only build must not have an MSI-X capability"
        return
    await tb.enumerate()
    await tb.enable()
    n = await tb.dev.alloc_irq_vectors(1, tb.msix_vectors)
    assert n == tb.msix_vectors
    assert tb.control()["msix_enable"] == 1
    vecs = tb.dev.msi_vectors
    table = 0x4000
    pba = 0x5000

    async def delivered(k, within_us=20):
        try:
            await with_timeout(vecs[k].event.wait(), within_us, "us")
            return True
        except SimTimeoutError:
            return False

    # Table contents as the RC programmed them.
    for k in range(tb.msix_vectors):
        lo, hi, data, ctl = await tb.bar.read_dwords(table + 16 * k, 4)
        assert (lo, hi, data, ctl) == (vecs[k].addr & 0xFFFF_FFFF, vecs[k].addr >> 32,
                                       vecs[k].data, 0)

    for k in range(tb.msix_vectors):
        vecs[k].event.clear()
        await tb.fire_msix(k)
        assert await delivered(k), f"vector {k} not delivered"

    # Per-vector mask: pending, then delivered on unmask.
    k = tb.msix_vectors - 1
    await tb.bar.write_dword(table + 16 * k + 12, 1)
    # Reading back flushes the posted write: it is done before the read completes.
    assert await tb.bar.read_dword(table + 16 * k + 12) == 1
    vecs[k].event.clear()
    await tb.fire_msix(k)
    assert not await delivered(k, 5)
    assert await tb.bar.read_dword(pba) == 1 << k
    await tb.bar.write_dword(pba, 0)                 # PBA is read-only
    assert await tb.bar.read_dword(pba) == 1 << k
    await tb.bar.write_dword(table + 16 * k + 12, 0)
    assert await delivered(k)
    assert await tb.bar.read_dword(pba) == 0

    # Function mask.
    cap = tb.cap_offset(CapId.MSIX)
    ctrl = await tb.cfg_read(cap // 4)
    await tb.cfg_write(cap // 4, ctrl | MsixCap.CTRL_FUNCTION_MASK << 16, 0b1000)
    vecs[0].event.clear()
    await tb.fire_msix(0)
    assert not await delivered(0, 5)
    assert await tb.bar.read_dword(pba) == 1
    await tb.cfg_write(cap // 4, ctrl & ~(MsixCap.CTRL_FUNCTION_MASK << 16), 0b1000)
    assert await delivered(0)

    # Bus Master Enable off holds messages back (§7.5.1.1.3).
    await tb.dev.clear_master()
    vecs[1].event.clear()
    await tb.fire_msix(1)
    assert not await delivered(1, 5)
    await tb.dev.set_master()
    assert await delivered(1)

    # A message address above 4 GiB goes out as a 4 DW MemWr.
    start = len(tb.tx_log)
    await tb.bar.write_dwords(table + 16 * 2, [0x89AB_CDE0, 0x0000_0012, 0x5A5A_0002, 0])
    assert await tb.bar.read_dword(table + 16 * 2 + 4) == 0x12      # flushes the write
    await tb.fire_msix(2)
    await tb.settle(400)
    writes = [(h, p) for h, p in tb.tx_log[start:] if h["fmt_type"] in
              (TlpFmtType.MWR32.value, TlpFmtType.MWR64.value)]
    assert len(writes) == 1
    h, payload = writes[0]
    assert h["fmt_type"] == TlpFmtType.MWR64.value and h["addr"] == 0x12_89AB_CDE0
    assert (h["length"], h["first_be"], h["last_be"], payload) == (1, 0xF, 0, [0x5A5A_0002])
    assert h["requester_id"] == int(tb.dev_id)

    # INTx must stay silent while MSI-X is enabled.
    tb.dut.intx.value = 1
    await tb.settle(400)
    assert tb.bridge.intx_messages == []
    status = (await tb.cfg_read(Cfg.COMMAND // 4)) >> 16
    assert not status & Cfg.STS_INTERRUPT_STATUS
    tb.dut.intx.value = 0

    # Function reset: table cleared, all masked, MSI-X off.
    await tb.function_reset([off for cid, off in tb.dev.capabilities if cid == CapId.VENDOR])
    assert tb.control()["msix_enable"] == 0
    await tb.rc.config_write_dword(tb.dev_id, Cfg.BAR0, tb.dev.bar_raw[0])
    if tb.params["bar_64bit"]:
        await tb.rc.config_write_dword(tb.dev_id, Cfg.BAR0 + 4, tb.dev.bar_raw[1])
    await tb.rc.config_write_word(tb.dev_id, Cfg.COMMAND, Cfg.CMD_MEMORY_SPACE)
    for k in range(tb.msix_vectors):
        assert await tb.bar.read_dwords(table + 16 * k, 4) == [0, 0, 0, 1]
    assert await tb.bar.read_dword(pba) == 0


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def test_intx(dut):
    """INTx: Assert/Deassert_INTA messages follow the level while MSI-X is off; Interrupt
    Disable deasserts; Interrupt Status shows the level regardless."""
    tb = TB(dut)
    await tb.enumerate()
    await tb.enable()
    status_dw = Cfg.COMMAND // 4
    msgs = tb.bridge.intx_messages

    async def wait_msgs(count):
        for _ in range(5000):
            if len(msgs) >= count:
                break
            await RisingEdge(tb.dut.clk)
        await tb.settle(50)
        assert len(msgs) == count, \
            f"expected {count} INTx messages, got {msgs}; last TLPs {tb.tx_log[-3:]}"

    tb.dut.intx.value = 1
    await wait_msgs(1)
    assert msgs[-1][1] == MsgCode.ASSERT_INTA.value and tb.bridge.intx_level
    assert (await tb.cfg_read(status_dw)) >> 16 & Cfg.STS_INTERRUPT_STATUS
    tb.dut.intx.value = 0
    await wait_msgs(2)
    assert msgs[-1][1] == MsgCode.DEASSERT_INTA.value and not tb.bridge.intx_level
    assert not (await tb.cfg_read(status_dw)) >> 16 & Cfg.STS_INTERRUPT_STATUS

    # The message carries the captured requester ID.
    intx_tlps = [h for h, _ in tb.tx_log if model.kind(h["fmt_type"]) == "message"]
    assert all(h["requester_id"] == int(tb.dev_id) and h["fmt_type"] == 0x34
               for h in intx_tlps)

    tb.dut.intx.value = 1
    await wait_msgs(3)
    cmd = await tb.cfg_read(status_dw) & 0xFFFF
    await tb.cfg_write(status_dw, cmd | Cfg.CMD_INTERRUPT_DISABLE, 0b0011)
    assert tb.control()["interrupt_disable"] == 1, (hex(cmd), tb.control())
    await wait_msgs(4)
    assert not tb.bridge.intx_level
    assert (await tb.cfg_read(status_dw)) >> 16 & Cfg.STS_INTERRUPT_STATUS   # still pending
    await tb.cfg_write(status_dw, cmd, 0b0011)
    await wait_msgs(5)
    assert tb.bridge.intx_level
    # Fast toggling coalesces but always ends in the final state, alternating.
    for _ in range(10):
        tb.dut.intx.value = 0
        await RisingEdge(tb.dut.clk)
        tb.dut.intx.value = 1
        await RisingEdge(tb.dut.clk)
    tb.dut.intx.value = 0
    await tb.settle(600)
    codes = [c for _, c in msgs]
    assert all(a != b for a, b in zip(codes, codes[1:])), codes
    assert codes[-1] == MsgCode.DEASSERT_INTA.value


@cocotb.test(timeout_time=80, timeout_unit="ms")
async def test_back_to_back_traffic(dut):
    """MMIO, DMA writes and reads and interrupts at once, random back-pressure on rx, tx and
    the completion port; memory, register and completion contents checked at the end."""
    tb = TB(dut, rx_idle=0.3, tx_backpressure=0.3, cpl_backpressure=0.3, max_wait=2)
    await tb.enumerate()
    await tb.enable()
    if tb.msix_vectors:
        await tb.dev.alloc_irq_vectors(1, tb.msix_vectors)
    rid = int(tb.dev_id)
    mem_base, mem = tb.rc.alloc_region(0x4000)
    expect_mem = bytearray(0x4000)
    shadow = bytearray(0x1000)
    mps_bytes = 128 << tb.control()["max_payload_size"]

    async def mmio():
        for _ in range(40):
            off = tb.rng.randrange(0, 0x1000 - 16, 4)
            n = tb.rng.choice((4, 8, 16))
            data = bytes(tb.rng.randrange(256) for _ in range(n))
            await tb.bar.write(0x2000 + off, data)
            shadow[off:off + n] = data
            got = await tb.bar.read(0x2000 + off, n)
            assert got == data

    async def dma_writes():
        for _ in range(30):
            n_dw = tb.rng.randint(1, mps_bytes // 4)
            off = tb.rng.randrange(0, 0x4000 - 4 * n_dw, 4)
            if (off & 0xFFF) + 4 * n_dw > 0x1000:
                off &= ~0xFFF
            dws = [tb.rng.randrange(1 << 32) for _ in range(n_dw)]
            hdr = model.empty_header() | dict(
                fmt_type=TlpFmtType.MWR32.value, length=n_dw & 0x3FF, requester_id=rid,
                first_be=0xF, last_be=0xF if n_dw > 1 else 0, addr=mem_base + off)
            tb.dma.send(hdr, dws)
            expect_mem[off:off + 4 * n_dw] = model.dws_to_bytes(dws)
            await ClockCycles(tb.dut.clk, tb.rng.randint(0, 20))

    reads = {}

    async def dma_reads():
        for tag in range(24):
            n_dw = tb.rng.randint(1, 64)
            off = tb.rng.randrange(0, 0x4000 - 4 * n_dw, 4)
            if (off & 0xFFF) + 4 * n_dw > 0x1000:
                off &= ~0xFFF
            reads[tag] = (off, n_dw)
            hdr = model.empty_header() | dict(
                fmt_type=TlpFmtType.MRD32.value, length=n_dw & 0x3FF, requester_id=rid,
                tag=tag, first_be=0xF, last_be=0xF if n_dw > 1 else 0, addr=mem_base + off)
            tb.dma.send(hdr)
            await ClockCycles(tb.dut.clk, tb.rng.randint(0, 40))

    async def irqs():
        if not tb.msix_vectors:
            return
        for _ in range(10):
            k = tb.rng.randrange(tb.msix_vectors)
            tb.dev.msi_vectors[k].event.clear()
            await tb.fire_msix(k)
            await with_timeout(tb.dev.msi_vectors[k].event.wait(), 100, "us")

    # The DMA writes go first so that reads of the same area see settled memory: reads
    # target a region written before they start.
    await cocotb.start_soon(dma_writes())
    for _ in range(50000):
        if tb.dma.sent == 30:
            break
        await RisingEdge(tb.dut.clk)
    assert tb.dma.sent == 30, f"only {tb.dma.sent} of 30 DMA writes left the port"
    await tb.settle(2000)
    diff = [i for i in range(len(expect_mem)) if mem[i] != expect_mem[i]]
    assert not diff, f"host memory differs after DMA writes at {len(diff)} bytes from {diff[0]:#x}"

    tasks = [cocotb.start_soon(c()) for c in (mmio, dma_reads, irqs)]
    for t in tasks:
        await t

    # Collect completions (several per read possible) until each read is complete.
    got = {tag: bytearray() for tag in reads}
    remaining = {tag: 4 * n for tag, (_, n) in reads.items()}
    while any(remaining.values()):
        hdr, payload = await with_timeout(tb.cpl.recv(), 200, "us")
        assert hdr["status"] == 0 and hdr["requester_id"] == rid
        tag = hdr["tag"]
        assert hdr["byte_count"] == remaining[tag] & 0xFFF, (hdr, remaining[tag])
        got[tag] += model.dws_to_bytes(payload)
        remaining[tag] -= 4 * len(payload)
    for tag, (off, n) in reads.items():
        assert bytes(got[tag]) == bytes(mem[off:off + 4 * n]), f"DMA read tag {tag} data"
    assert tb.clients["device"].mem == shadow
    assert tb.bridge.rx_count > 0 and tb.bridge.tx_count > 0
