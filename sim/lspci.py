"""``python -m sim.lspci``: enumerate the PCIe function in simulation, print it like ``lspci -vvv -xxx``.

The function is built (Verilator through :mod:`sim.runner`), a cocotbext-pcie root complex
enumerates it through :mod:`sim.pcie_bridge` exactly as a host would (BAR sizing and
assignment, MPS, Extended Tag), optionally enables it like a driver (memory space, bus
mastering, MSI-X vectors), then reads the configuration space back over the link. The dump
is decoded here, from the bytes alone: identity, Command/Status, BARs, every capability.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from hdl.pcie.spec import PcieCap

__all__ = ["format_lspci", "main"]

log = logging.getLogger(__name__)

_VENDORS = {0x1AF4: "Red Hat, Inc."}
_DEVICES = {(0x1AF4, 0x1042): "Virtio 1.0 block device"}
_CLASSES = {0x0100: "SCSI storage controller", 0x0101: "IDE interface",
            0x0106: "SATA controller", 0x0108: "Non-Volatile memory controller",
            0x0180: "Mass storage controller", 0x0200: "Ethernet controller",
            0x0580: "Memory controller", 0xFF00: "Unassigned class"}
_VIRTIO_TYPES = {1: "CommonCfg", 2: "Notify", 3: "ISR", 4: "DeviceCfg", 5: "PCICfg",
                 8: "SharedMemory", 9: "VendorCfg"}
_PORT_TYPES = {0: "Endpoint", 1: "Legacy Endpoint", 4: "Root Port", 5: "Upstream Port",
               6: "Downstream Port", 9: "Root Complex Integrated Endpoint"}


def _flag(name: str, value) -> str:
    return f"{name}{'+' if value else '-'}"


def _size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def _speed(code: int) -> str:
    gts = PcieCap.LINK_SPEEDS_GTS.get(code)
    return f"{gts:g}GT/s" if gts else f"unknown ({code})"


class _Cfg:
    def __init__(self, data: bytes):
        self.data = data

    def b(self, off: int) -> int:
        return self.data[off] if off < len(self.data) else 0

    def w(self, off: int) -> int:
        return int.from_bytes(self.data[off:off + 2].ljust(2, b"\0"), "little")

    def d(self, off: int) -> int:
        return int.from_bytes(self.data[off:off + 4].ljust(4, b"\0"), "little")


def format_lspci(config: bytes, *, bdf: str = "00:00.0", bars: list[dict] | None = None) -> str:
    """Decode a configuration space dump the way ``lspci -vvv -xxx`` shows it."""
    c = _Cfg(config)
    vendor, device = c.w(0x00), c.w(0x02)
    cls = c.d(0x08) >> 8
    lines = []
    vname = _VENDORS.get(vendor, f"Device {vendor:04x}")
    dname = _DEVICES.get((vendor, device), f"Device {device:04x}")
    cname = _CLASSES.get(cls >> 8, f"Class {cls >> 8:04x}")
    lines.append(f"{bdf} {cname}: {vname} {dname} (rev {c.b(0x08):02x})")
    svendor = c.w(0x2C)
    lines.append(f"\tSubsystem: {_VENDORS.get(svendor, f'Device {svendor:04x}')} "
                 f"Device {c.w(0x2E):04x}")
    cmd, sts = c.w(0x04), c.w(0x06)
    lines.append("\tControl: " + " ".join([
        _flag("I/O", cmd & 1), _flag("Mem", cmd & 2), _flag("BusMaster", cmd & 4),
        _flag("SpecCycle", cmd & 8), _flag("MemWINV", cmd & 0x10),
        _flag("VGASnoop", cmd & 0x20), _flag("ParErr", cmd & 0x40),
        _flag("Stepping", cmd & 0x80), _flag("SERR", cmd & 0x100),
        _flag("FastB2B", cmd & 0x200), _flag("DisINTx", cmd & 0x400)]))
    lines.append("\tStatus: " + " ".join([
        _flag("Cap", sts & 0x10), _flag("66MHz", sts & 0x20), _flag("UDF", sts & 0x40),
        _flag("FastB2B", sts & 0x80), _flag("ParErr", sts & 0x100),
        "DEVSEL=" + ("fast", "medium", "slow", "??")[(sts >> 9) & 3],
        _flag(">TAbort", sts & 0x800), _flag("<TAbort", sts & 0x1000),
        _flag("<MAbort", sts & 0x2000), _flag(">SERR", sts & 0x4000),
        _flag("<PERR", sts & 0x8000), _flag("INTx", sts & 0x8)]))
    pin = c.b(0x3D)
    if pin:
        lines.append(f"\tInterrupt: pin {'?ABCD'[pin] if pin < 5 else '?'} routed to IRQ "
                     f"{c.b(0x3C)}")
    bar_info = {b["index"]: b for b in (bars or [])}
    i = 0
    while i < 6:
        raw = c.d(0x10 + 4 * i)
        info = bar_info.get(i)
        wide = (raw & 0b111) == 0b100
        if raw & 1:
            lines.append(f"\tRegion {i}: I/O ports at {raw & ~3:x}")
        elif raw or info:
            addr = raw & ~0xF
            if wide:
                addr |= c.d(0x14 + 4 * i) << 32
            size = f" [size={_size(info['size'])}]" if info else ""
            lines.append(f"\tRegion {i}: Memory at {addr:x} ({'64' if wide else '32'}-bit, "
                         f"{'' if raw & 8 else 'non-'}prefetchable){size}")
        i += 2 if wide else 1

    ptr, seen = c.b(0x34) & 0xFC, set()
    while ptr and ptr not in seen:
        seen.add(ptr)
        cap_id, nxt = c.b(ptr), c.b(ptr + 1) & 0xFC
        lines += _capability(c, ptr, cap_id, vendor)
        ptr = nxt
    ext = c.d(0x100)
    if len(config) > 0x100 and ext not in (0, 0xFFFF_FFFF):
        lines.append(f"\tCapabilities: [100 v{(ext >> 16) & 0xF}] Extended Capability "
                     f"ID {ext & 0xFFFF:04x}")

    for off in range(0, len(config), 16):
        lines.append(f"{off:02x}: " + " ".join(f"{x:02x}" for x in config[off:off + 16]))
    return "\n".join(lines) + "\n"


def _capability(c: _Cfg, p: int, cap_id: int, vendor: int) -> list[str]:
    if cap_id == 0x01:
        pmc, pmcsr = c.w(p + 2), c.w(p + 4)
        pme = ",".join(f"{s}{'+' if pmc >> (11 + k) & 1 else '-'}"
                       for k, s in enumerate(("D0", "D1", "D2", "D3hot", "D3cold")))
        return [
            f"\tCapabilities: [{p:02x}] Power Management version {pmc & 7}",
            "\t\tFlags: " + " ".join([_flag("PMEClk", pmc & 8), _flag("DSI", pmc & 0x20),
                                      _flag("D1", pmc & 0x200), _flag("D2", pmc & 0x400),
                                      f"AuxCurrent={(pmc >> 6) & 7}mA", f"PME({pme})"]),
            "\t\tStatus: " + " ".join([f"D{pmcsr & 3}", _flag("NoSoftRst", pmcsr & 8),
                                       _flag("PME-Enable", pmcsr & 0x100),
                                       f"DSel={(pmcsr >> 9) & 15}",
                                       f"DScale={(pmcsr >> 13) & 3}",
                                       _flag("PME", pmcsr & 0x8000)]),
        ]
    if cap_id == 0x10:
        return _pcie_capability(c, p)
    if cap_id == 0x11:
        ctrl = c.w(p + 2)
        table, pba = c.d(p + 4), c.d(p + 8)
        return [
            f"\tCapabilities: [{p:02x}] MSI-X: {_flag('Enable', ctrl & 0x8000)} "
            f"Count={(ctrl & 0x7FF) + 1} {_flag('Masked', ctrl & 0x4000)}",
            f"\t\tVector table: BAR={table & 7} offset={table & ~7:08x}",
            f"\t\tPBA: BAR={pba & 7} offset={pba & ~7:08x}",
        ]
    if cap_id == 0x09:
        length = c.b(p + 2)
        if vendor == 0x1AF4 and length >= 16:
            kind = c.b(p + 3)
            out = [f"\tCapabilities: [{p:02x}] Vendor Specific Information: VirtIO: "
                   f"{_VIRTIO_TYPES.get(kind, f'<unknown {kind}>')}",
                   f"\t\tBAR={c.b(p + 4)} offset={c.d(p + 8):08x} size={c.d(p + 12):08x}"]
            if kind == 2 and length >= 20:
                out[-1] += f" multiplier={c.d(p + 16):08x}"
            return out
        return [f"\tCapabilities: [{p:02x}] Vendor Specific Information: Len={length:02x} <?>"]
    return [f"\tCapabilities: [{p:02x}] Capability ID {cap_id:02x} <?>"]


def _pcie_capability(c: _Cfg, p: int) -> list[str]:
    caps = c.w(p + 2)
    devcap, devctl, devsta = c.d(p + 4), c.w(p + 8), c.w(p + 10)
    lnkcap, lnkctl, lnksta = c.d(p + 12), c.w(p + 16), c.w(p + 18)
    devcap2, devctl2 = c.d(p + 0x24), c.w(p + 0x28)
    lnkcap2, lnkctl2, lnksta2 = c.d(p + 0x2C), c.w(p + 0x30), c.w(p + 0x32)
    aspm = {0: "not supported", 1: "L0s", 2: "L1", 3: "L0s L1"}[(lnkcap >> 10) & 3]
    speeds = ", ".join(_speed(k) for k in range(1, 8) if lnkcap2 >> k & 1)
    return [
        f"\tCapabilities: [{p:02x}] Express (v{caps & 0xF}) "
        f"{_PORT_TYPES.get((caps >> 4) & 0xF, 'Unknown type')}, MSI {(caps >> 9) & 0x1F:02x}",
        f"\t\tDevCap:\tMaxPayload {128 << (devcap & 7)} bytes, PhantFunc {(devcap >> 3) & 3}, "
        f"Latency L0s <{64 << ((devcap >> 6) & 7)}ns, L1 <{1 << ((devcap >> 9) & 7)}us",
        "\t\t\t" + " ".join([_flag("ExtTag", devcap & 0x20), _flag("RBE", devcap & 0x8000),
                             _flag("FLReset", devcap & (1 << 28))]),
        "\t\tDevCtl:\t" + " ".join([_flag("CorrErr", devctl & 1), _flag("NonFatalErr", devctl & 2),
                                    _flag("FatalErr", devctl & 4), _flag("UnsupReq", devctl & 8)]),
        "\t\t\t" + " ".join([_flag("RlxdOrd", devctl & 0x10), _flag("ExtTag", devctl & 0x100),
                             _flag("PhantFunc", devctl & 0x200), _flag("AuxPwr", devctl & 0x400),
                             _flag("NoSnoop", devctl & 0x800)]),
        f"\t\t\tMaxPayload {128 << ((devctl >> 5) & 7)} bytes, "
        f"MaxReadReq {128 << ((devctl >> 12) & 7)} bytes",
        "\t\tDevSta:\t" + " ".join([_flag("CorrErr", devsta & 1), _flag("NonFatalErr", devsta & 2),
                                    _flag("FatalErr", devsta & 4), _flag("UnsupReq", devsta & 8),
                                    _flag("AuxPwr", devsta & 0x10),
                                    _flag("TransPend", devsta & 0x20)]),
        f"\t\tLnkCap:\tPort #{lnkcap >> 24}, Speed {_speed(lnkcap & 0xF)}, "
        f"Width x{(lnkcap >> 4) & 0x3F}, ASPM {aspm}",
        "\t\t\t" + " ".join([_flag("ClockPM", lnkcap & (1 << 18)),
                             _flag("Surprise", lnkcap & (1 << 19)),
                             _flag("LLActRep", lnkcap & (1 << 20)),
                             _flag("BwNot", lnkcap & (1 << 21)),
                             _flag("ASPMOptComp", lnkcap & (1 << 22))]),
        f"\t\tLnkCtl:\tASPM {('Disabled', 'L0s Enabled', 'L1 Enabled', 'L0s L1 Enabled')[lnkctl & 3]}; "
        f"RCB {128 if lnkctl & 8 else 64} bytes, " + " ".join(
            [_flag("Disabled", lnkctl & 0x10), _flag("CommClk", lnkctl & 0x40)]),
        "\t\t\t" + " ".join([_flag("ExtSynch", lnkctl & 0x80), _flag("ClockPM", lnkctl & 0x100),
                             _flag("AutWidDis", lnkctl & 0x200), _flag("BWInt", lnkctl & 0x400),
                             _flag("AutBWInt", lnkctl & 0x800)]),
        f"\t\tLnkSta:\tSpeed {_speed(lnksta & 0xF)}, Width x{(lnksta >> 4) & 0x3F}",
        "\t\t\t" + " ".join([_flag("TrErr", lnksta & 0x400), _flag("Train", lnksta & 0x800),
                             _flag("SlotClk", lnksta & 0x1000),
                             _flag("DLActive", lnksta & 0x2000),
                             _flag("BWMgmt", lnksta & 0x4000), _flag("ABWMgmt", lnksta & 0x8000)]),
        "\t\tDevCap2: Completion Timeout: "
        + ("Not Supported" if devcap2 & 0xF == 0 else f"Range {devcap2 & 0xF:x}")
        + f", {_flag('TimeoutDis', devcap2 & 0x10)} {_flag('LTR', devcap2 & 0x800)} "
        f"{_flag('10BitTagComp', devcap2 & 0x10000)}",
        f"\t\tDevCtl2: Completion Timeout: {'50us to 50ms' if devctl2 & 0xF == 0 else 'set'}, "
        f"{_flag('TimeoutDis', devctl2 & 0x10)} {_flag('LTR', devctl2 & 0x400)}",
        f"\t\tLnkCap2: Supported Link Speeds: {speeds or 'none'}, "
        f"{_flag('Crosslink', lnkcap2 & 0x100)}",
        f"\t\tLnkCtl2: Target Link Speed: {_speed(lnkctl2 & 0xF)}, "
        f"{_flag('EnterCompliance', lnkctl2 & 0x10)} {_flag('SpeedDis', lnkctl2 & 0x20)}",
        f"\t\tLnkSta2: Current De-emphasis Level: {'-3.5dB' if lnksta2 & 1 else '-6dB'}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.lspci",
        description="Build the PCIe endpoint function, enumerate it with a cocotbext-pcie "
                    "root complex in simulation and print its configuration space like "
                    "'lspci -vvv -xxx'.")
    parser.add_argument("--width", type=int, choices=(64, 128), default=64,
                        help="TLP stream width in bits (default 64)")
    parser.add_argument("--bar64", action="store_true", help="build BAR0 as a 64-bit BAR")
    parser.add_argument("--msix-vectors", type=int, default=4, metavar="N",
                        help="MSI-X table size; 0 builds the INTx-only function (default 4)")
    parser.add_argument("--link-speed", type=int, default=1, choices=range(1, 6),
                        help="link speed: 1 = 2.5 GT/s ... 5 = 32 GT/s (default 1)")
    parser.add_argument("--link-width", type=int, default=1, choices=PcieCap.LINK_WIDTHS,
                        help="link width in lanes (default 1)")
    parser.add_argument("--enable", action="store_true",
                        help="also do what a driver does: enable memory space and bus "
                             "mastering, allocate MSI-X vectors")
    parser.add_argument("--extended", action="store_true",
                        help="dump all 4096 bytes (like -xxxx) instead of 256")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write the raw dump (config bytes, BARs) as JSON")
    args = parser.parse_args(argv)

    from sim.example_function import example_function
    from sim.runner import run

    params = dict(width=args.width, bar_64bit=args.bar64, msix_vectors=args.msix_vectors,
                  link_speed=args.link_speed, link_width=args.link_width)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lspci.json"
        with console.status("building the function and enumerating it in simulation..."):
            run(lambda: example_function(**params), toplevel="pcie_function",
                test_module="sim.lspci_tb", params=params,
                extra_env={"LSPCI_OUT": str(out), "LSPCI_ENABLE": str(int(args.enable)),
                           "LSPCI_BYTES": "4096" if args.extended else "256"})
        result = json.loads(out.read_text())
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    text = format_lspci(bytes.fromhex(result["config"]), bdf=result["bdf"],
                        bars=result["bars"])
    # Plain stdout: the dump keeps lspci's tabs and is never wrapped, so it can be diffed.
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
