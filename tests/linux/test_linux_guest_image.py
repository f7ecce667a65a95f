"""Building the guest image, without the network: cpio, modinfo, load order, PVH, console.

The cpio archives are read back by a parser written here from the kernel's description of the
"newc" format (``Documentation/driver-api/early-userspace/buffer-format.rst``); the ELF objects
are assembled here byte by byte from the ELF64 layout.
"""
import gzip
import lzma
import struct

import pytest

from sim.linux.guest import (BEGIN_MARK, END_MARK, CpioWriter, GuestSetupError, bzimage_payload,
                             has_pvh_entry, modinfo, module_load_order)
from sim.linux.qemu import ConsoleLine, parse_console


def read_newc(archive: bytes) -> list[dict]:
    entries, pos = [], 0
    while True:
        assert archive[pos:pos + 6] == b"070701"
        fields = [int(archive[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, filesize, _, _, rmaj, rmin, namesize, check = fields
        name_start = pos + 110
        name = archive[name_start:name_start + namesize]
        assert name.endswith(b"\0")
        data_start = (name_start + namesize + 3) // 4 * 4
        data = archive[data_start:data_start + filesize]
        pos = (data_start + filesize + 3) // 4 * 4
        if name == b"TRAILER!!!\0":
            assert pos == len(archive)
            return entries
        entries.append({"name": name[:-1].decode(), "mode": mode, "data": data, "uid": uid,
                        "mtime": mtime, "rdev": (rmaj, rmin), "ino": ino, "check": check})


def test_cpio_newc_entries():
    cpio = CpioWriter()
    cpio.directory("bin")
    cpio.file("bin/busybox", b"\x7fELF" + b"x" * 13, 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.char_device("dev/console", 5, 1)
    cpio.file("init", b"#!/bin/sh\n", 0o755)
    entries = read_newc(cpio.finish())
    assert [e["name"] for e in entries] == ["bin", "bin/busybox", "bin/sh", "dev/console", "init"]
    by_name = {e["name"]: e for e in entries}
    assert by_name["bin"]["mode"] == 0o040755
    assert by_name["bin/busybox"]["mode"] == 0o100755
    assert by_name["bin/busybox"]["data"] == b"\x7fELF" + b"x" * 13      # odd length padded
    assert by_name["bin/sh"]["mode"] == 0o120777 and by_name["bin/sh"]["data"] == b"busybox"
    assert by_name["dev/console"]["mode"] == 0o020600 and by_name["dev/console"]["rdev"] == (5, 1)
    assert all(e["uid"] == 0 and e["mtime"] == 0 and e["check"] == 0 for e in entries)
    assert len({e["ino"] for e in entries}) == len(entries)
    with pytest.raises(ValueError):
        cpio.file("late", b"")


def elf64(sections: dict[str, bytes], *, notes: bytes | None = None) -> bytes:
    """A minimal ELF64 little-endian object with the given sections (and a PT_NOTE segment)."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*sections, ".shstrtab"])
    blobs = [*sections.values(), names]
    body, offsets = b"", []
    start = 64 + (56 if notes is not None else 0)
    for blob in blobs:
        offsets.append(start + len(body))
        body += blob
    note_offset = start + len(body)
    if notes is not None:
        body += notes
    shoff = start + len(body)
    shdrs = b"\0" * 64
    name_pos = 1
    for (name, blob), offset in zip([*sections.items(), (".shstrtab", names)], offsets):
        shdrs += struct.pack("<IIQQQQIIQQ", name_pos, 1, 0, 0, offset, len(blob), 0, 0, 1, 0)
        name_pos += len(name) + 1
    ident = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 64 if notes is not None else 0,
                               shoff, 0, 64, 56, 1 if notes is not None else 0, 64,
                               len(blobs) + 1, len(blobs))
    phdr = b""
    if notes is not None:
        phdr = struct.pack("<IIQQQQQQ", 4, 4, note_offset, 0, 0, len(notes), len(notes), 4)
    return ehdr + phdr + body + shdrs


def note(name: bytes, n_type: int, desc: bytes) -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)            # noqa: E731
    return struct.pack("<III", len(name) + 1, len(desc), n_type) + pad(name + b"\0") + pad(desc)


def test_modinfo_reads_the_modinfo_section():
    info = b"license=GPL\0depends=virtio,virtio_ring\0intree=Y\0name=virtio_blk\0"
    elf = elf64({".text": b"\x90" * 10, ".modinfo": info})
    assert modinfo(elf) == {"license": "GPL", "depends": "virtio,virtio_ring", "intree": "Y",
                            "name": "virtio_blk"}
    assert modinfo(elf64({".text": b""})) == {}
    with pytest.raises(ValueError):
        modinfo(b"MZ" + b"\0" * 100)


def test_module_load_order_puts_dependencies_first():
    depends = {"virtio_ring": [], "virtio": ["virtio_ring"], "virtio_pci_legacy_dev": [],
               "virtio_pci_modern_dev": [],
               "virtio_pci": ["virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                              "virtio"],
               "virtio_blk": ["virtio", "virtio_ring"], "ext4": ["jbd2", "mbcache", "crc16"],
               "jbd2": [], "mbcache": [], "crc16": []}
    order = module_load_order(["virtio_blk", "virtio_pci", "ext4"], depends)
    assert sorted(order) == sorted(depends)
    for name, deps in depends.items():
        assert all(order.index(d) < order.index(name) for d in deps)
    assert order[:3] == ["virtio_ring", "virtio", "virtio_blk"]
    builtin_virtio = {n: d for n, d in depends.items() if n not in ("virtio_ring", "virtio")}
    assert module_load_order(["virtio_blk"], builtin_virtio, builtin=["virtio_ring", "virtio"]) \
        == ["virtio_blk"]
    with pytest.raises(GuestSetupError, match="nvme .*not in the kernel package"):
        module_load_order(["nvme"], depends)
    with pytest.raises(GuestSetupError, match="cycle"):
        module_load_order(["a"], {"a": ["b"], "b": ["a"]})


def bzimage(payload: bytes, version: int = 0x20F, setup_sects: int = 3) -> bytes:
    image = bytearray((setup_sects + 1) * 512)
    image[0x1F1] = setup_sects
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, version)
    struct.pack_into("<II", image, 0x248, 0x100, len(payload))
    return bytes(image) + b"\0" * 0x100 + payload + b"trailing"


def test_bzimage_payload_and_pvh_note():
    vmlinux = elf64({".text": b"\x90" * 64}, notes=note(b"GNU", 3, b"\1" * 20)
                    + note(b"Xen", 18, struct.pack("<I", 0x1000000)))
    assert has_pvh_entry(vmlinux)
    assert not has_pvh_entry(elf64({".text": b""}, notes=note(b"Xen", 5, b"xen-3.0")))
    assert not has_pvh_entry(elf64({".text": b""}))
    xz = lzma.compress(vmlinux, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    assert bzimage_payload(bzimage(xz)) == vmlinux
    assert bzimage_payload(bzimage(gzip.compress(vmlinux))) == vmlinux
    assert bzimage_payload(bzimage(b"\x28\xb5\x2f\xfd zstd")) is None
    assert bzimage_payload(bzimage(xz, version=0x207)) is None
    assert bzimage_payload(b"\0" * 4096) is None


def test_parse_console_takes_checks_between_the_marks():
    text = ["SeaBIOS (version x)", "CHECK PASS early: before the begin mark is ignored",
            BEGIN_MARK, "CHECK PASS device: found it", "[   12.3] some kernel warning",
            "INFO bar0: 0xfebff000", "CHECK FAIL dma: expected 2, got 6",
            "INFO dma: 0x1 0x2 3 abc", END_MARK + "1 ====", "CHECK PASS late: ignored"]
    lines = [ConsoleLine(float(i), t) for i, t in enumerate(text)]
    console = parse_console(lines)
    assert [(c.name, c.passed, c.detail) for c in console.checks] == [
        ("device", True, "found it"), ("dma", False, "expected 2, got 6")]
    assert console.info == [("bar0", "0xfebff000"), ("dma", "0x1 0x2 3 abc")]
    assert console.workload_rc == 1
    assert console.begin.seconds == 2.0 and console.end.seconds == 8.0
    unfinished = parse_console(lines[:5])
    assert unfinished.workload_rc is None and unfinished.end is None
