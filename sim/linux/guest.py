"""The Linux guest: a Debian kernel and a busybox initramfs, fetched and built on first use.

Everything comes from Debian packages through the ordinary ``apt-get`` client and is cached
under ``build/linux/`` (``VIRTIO_INORDER_BUILD`` moves ``build/``):

``debs/``
    the downloaded ``.deb`` files (``apt-get download``), kept so a rebuild needs no network;
``kernel-PACKAGE-VERSION/``
    ``vmlinuz``, the kernel ``config``, ``vmlinux`` (the bzImage's payload, unpacked once so QEMU
    can boot it through its PVH entry without decompressing it under TCG) and, in ``modules/``,
    the ``.ko`` files the guest loads (dependencies resolved from each module's own ``depends=``
    modinfo entry, since Debian ships no ``modules.dep``: ``depmod`` writes it at install time);
``busybox-VERSION/busybox``
    the statically linked busybox from ``busybox-static``;
``initramfs-DIGEST.cpio.gz``
    the base initramfs (busybox, the modules, ``/init``, ``/etc/modules``), keyed by a digest of
    everything that goes into it.

A run appends a second, tiny cpio archive holding ``/workload.sh`` to the base archive (the
kernel unpacks concatenated archives in turn), so changing the workload never rebuilds the
base. ``/init`` mounts ``/proc``, ``/sys``, ``/dev`` and ``/tmp``, inserts the modules in
dependency order, runs ``/workload.sh`` between the :data:`BEGIN_MARK` and :data:`END_MARK`
lines on the serial console and powers off.

``python -m sim.linux.guest`` prepares all of this (and installs QEMU when it is missing and we
are root) and prints where it is.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import re
import shutil
import struct
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from sim.runner import BUILD_ROOT

__all__ = ["GuestImage", "prepare_guest", "ensure_qemu", "GUEST_MODULES", "KERNEL_META_PACKAGE",
           "BUSYBOX_PACKAGE", "BEGIN_MARK", "END_MARK", "CpioWriter", "module_load_order",
           "modinfo", "GuestSetupError", "CACHE_DIR"]

log = logging.getLogger(__name__)

CACHE_DIR = BUILD_ROOT / "linux"

KERNEL_META_PACKAGE = "linux-image-amd64"
"""Debian's meta package; it depends on the current ``linux-image-RELEASE-amd64``."""

BUSYBOX_PACKAGE = "busybox-static"

QEMU_PACKAGE = "qemu-system-x86"
QEMU_BINARY = "qemu-system-x86_64"

GUEST_MODULES = (
    # The virtio stack, in the order the issue names (each module's dependencies come first).
    "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
    "virtio_blk",
    # ext2 through the ext4 driver (CONFIG_EXT4_USE_FOR_EXT2=y in Debian's config); crc32c is
    # only needed for metadata_csum, loaded so a checksummed ext4 mounts too.
    "crc32c_generic", "ext4",
    # The loop device lets a workload check the filesystem path without any virtio disk.
    "loop",
)
"""Modules the guest inserts (their dependencies are added); none of them is built in."""

BEGIN_MARK = "==== virtio-inorder workload begin ===="
END_MARK = "==== virtio-inorder workload end rc="
"""``/init`` prints ``END_MARK`` followed by the workload's exit status and `` ====``."""

_SCRIPTS = Path(__file__).resolve().parent / "scripts"


class GuestSetupError(RuntimeError):
    """Something the guest needs could not be installed, downloaded or built."""


# --- Debian packages ----------------------------------------------------------------------------

def _is_root() -> bool:
    return os.geteuid() == 0


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    log.debug("running %s", " ".join(cmd))
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


_apt_updated = False


def _apt_update() -> None:
    """``apt-get update`` once per process, when root (a fresh machine has no package lists)."""
    global _apt_updated
    if _apt_updated or not _is_root():
        return
    log.info("apt-get update")
    res = _run(["apt-get", "update"])
    if res.returncode != 0:
        raise GuestSetupError(f"apt-get update failed:\n{res.stderr.strip()}")
    _apt_updated = True


@contextlib.contextmanager
def _cache_lock(cache_dir: Path = CACHE_DIR) -> Iterator[None]:
    """Serialize installs and cache builds between processes (parallel test workers)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_qemu() -> Path:
    """Return the path of ``qemu-system-x86_64``, installing Debian's package when missing.

    Installing needs root (``apt-get install``); otherwise the error says what to install. The
    binary must have the ``x-pci-proxy-dev`` device (QEMU 7.2 built with multi-process support,
    as Debian's is).
    """
    with _cache_lock():
        found = shutil.which(QEMU_BINARY)
        if not found:
            if not _is_root():
                raise GuestSetupError(
                    f"{QEMU_BINARY} is not installed and we are not root to install it: run "
                    f"`sudo apt-get install {QEMU_PACKAGE}` (QEMU 7.2 or later with the "
                    "x-pci-proxy-dev device)")
            _apt_update()
            log.info("apt-get install %s", QEMU_PACKAGE)
            res = _run(["apt-get", "install", "-y", "--no-install-recommends", QEMU_PACKAGE],
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if res.returncode != 0:
                raise GuestSetupError(f"apt-get install {QEMU_PACKAGE} failed:\n"
                                      f"{res.stderr.strip()}")
            found = shutil.which(QEMU_BINARY)
            if not found:
                raise GuestSetupError(f"{QEMU_PACKAGE} was installed but {QEMU_BINARY} is not "
                                      "on the PATH")
    probe = _run([found, "-device", "x-pci-proxy-dev,help"])
    if "x-pci-proxy-dev options" not in probe.stdout:
        raise GuestSetupError(f"{found} has no x-pci-proxy-dev device (QEMU 7.2 built with "
                              f"multi-process support is needed): {probe.stderr.strip()}")
    return Path(found)


def current_kernel_package() -> str:
    """The ``linux-image-RELEASE-amd64`` package that ``linux-image-amd64`` points at now."""
    for attempt in range(2):
        res = _run(["apt-cache", "depends", KERNEL_META_PACKAGE])
        found = re.findall(r"Depends:\s+(linux-image-\S+-amd64)\b", res.stdout)
        if found:
            return found[0]
        if attempt == 0:
            _apt_update()
    raise GuestSetupError(f"`apt-cache depends {KERNEL_META_PACKAGE}` names no kernel package "
                          "(no Debian package lists? run `apt-get update` as root)")


def download_deb(package: str, dest: Path) -> Path:
    """``apt-get download`` one package into ``dest`` (cached: a present .deb is reused)."""
    dest.mkdir(parents=True, exist_ok=True)
    pattern = f"{package.replace('+', '?')}_*.deb"
    existing = sorted(dest.glob(pattern))
    if existing:
        return existing[-1]
    # As root, apt hands the download to the unprivileged _apt user, which cannot write into
    # a root-owned cache folder; the download itself is the same either way.
    sandbox = ["-o", "APT::Sandbox::User=root"] if _is_root() else []
    for attempt in range(2):
        log.info("apt-get download %s", package)
        res = _run(["apt-get", *sandbox, "download", package], cwd=dest)
        existing = sorted(dest.glob(pattern))
        if res.returncode == 0 and existing:
            return existing[-1]
        if attempt == 0:
            _apt_update()
    raise GuestSetupError(f"apt-get download {package} failed:\n{res.stderr.strip()}")


def deb_version(deb: Path) -> str:
    res = _run(["dpkg-deb", "--field", str(deb), "Version"])
    if res.returncode != 0:
        raise GuestSetupError(f"dpkg-deb cannot read {deb}: {res.stderr.strip()}")
    return res.stdout.strip()


def deb_members(deb: Path) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """Stream the data archive of a ``.deb`` (``dpkg-deb --fsys-tarfile``), member by member."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                yield member, tar
    finally:
        proc.stdout.close()
        if proc.wait() not in (0, -13):     # -13: we stopped reading early (SIGPIPE)
            raise GuestSetupError(f"dpkg-deb --fsys-tarfile {deb} failed")


# --- Kernel modules -----------------------------------------------------------------------------

def _module_bytes(name: str, data: bytes) -> bytes:
    """The ELF image of a module file, decompressing ``.ko.xz`` (busybox insmod cannot)."""
    if name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if name.endswith(".ko.zst"):
        raise GuestSetupError(f"{name}: zstd-compressed modules are not supported")
    return data


def modinfo(elf: bytes) -> dict[str, str]:
    """The ``key=value`` entries of a module's ``.modinfo`` section (ELF64 little endian)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not an ELF64 little-endian object")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", elf,
                                                                        shoff + i * shentsize)
        return name, offset, size

    _, strtab_off, strtab_size = section(shstrndx)
    strtab = elf[strtab_off:strtab_off + strtab_size]
    for i in range(shnum):
        name_off, offset, size = section(i)
        name = strtab[name_off:strtab.index(b"\0", name_off)]
        if name == b".modinfo":
            info = {}
            for entry in elf[offset:offset + size].split(b"\0"):
                key, sep, value = entry.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, value)
            return info
    return {}


def module_load_order(wanted: Iterable[str], depends: dict[str, list[str]],
                      builtin: Iterable[str] = ()) -> list[str]:
    """Wanted modules plus their dependencies, each after everything it depends on.

    Keeps the order of ``wanted`` where dependencies allow (a depth-first post-order).
    Modules in ``builtin`` are part of the kernel image and need no loading (Debian's 6.12,
    for one, builds ``virtio_ring`` and ``virtio`` in).
    """
    order: list[str] = []
    visiting: set[str] = set()
    builtin = set(builtin)

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order or name in builtin:
            return
        if name not in depends:
            raise GuestSetupError(f"module {name} (needed by {' <- '.join(chain) or 'the guest'})"
                                  " is not in the kernel package")
        if name in visiting:
            raise GuestSetupError(f"module dependency cycle through {name}")
        visiting.add(name)
        for dep in depends[name]:
            visit(dep, (name, *chain))
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def _module_name(path: str) -> str | None:
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko", ".ko.xz", ".ko.zst"):
        if base.endswith(suffix):
            return base[:-len(suffix)].replace("-", "_")
    return None


def _extract_kernel(deb: Path, dest: Path, wanted: Iterable[str]) -> tuple[str, list[str]]:
    """Extract vmlinuz, config and the wanted modules (with dependencies) from the kernel .deb.

    Two streaming passes: the first reads every module's ``depends=``, the second extracts
    the closure. Returns the kernel release and the load order.
    """
    depends: dict[str, list[str]] = {}
    builtin: set[str] = set()
    release = None
    for member, tar in deb_members(deb):
        name = _module_name(member.name)
        if name is not None and member.isfile():
            data = _module_bytes(member.name, tar.extractfile(member).read())
            deps = modinfo(data).get("depends", "")
            depends[name] = [d.replace("-", "_") for d in deps.split(",") if d]
        elif re.match(r"\./lib/modules/[^/]+/modules\.builtin$", member.name):
            builtin = {n for n in map(_module_name, tar.extractfile(member).read().decode()
                                      .split()) if n}
        m = re.match(r"\./boot/vmlinuz-(.+)$", member.name)
        if m:
            release = m.group(1)
    if release is None:
        raise GuestSetupError(f"{deb.name} holds no /boot/vmlinuz-*")
    order = module_load_order(wanted, depends, builtin)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "modules").mkdir(parents=True)
    needed = set(order)
    for member, tar in deb_members(deb):
        name = _module_name(member.name)
        if name in needed and member.isfile():
            data = _module_bytes(member.name, tar.extractfile(member).read())
            (tmp / "modules" / f"{name}.ko").write_bytes(data)
        elif member.name == f"./boot/vmlinuz-{release}":
            (tmp / "vmlinuz").write_bytes(tar.extractfile(member).read())
        elif member.name == f"./boot/config-{release}":
            (tmp / "config").write_bytes(tar.extractfile(member).read())
    (tmp / "modules.order").write_text("\n".join(order) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return release, order


# --- Booting the kernel without decompressing it under TCG -------------------------------------

def bzimage_payload(bzimage: bytes) -> bytes | None:
    """The uncompressed ELF ``vmlinux`` inside a bzImage, or None when it cannot be had.

    The setup header (``Documentation/x86/boot.rst``, protocol 2.08 and later) gives the
    compressed payload's offset and length after the setup sectors; xz and gzip payloads are
    unpacked here.
    """
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        return None
    version, = struct.unpack_from("<H", bzimage, 0x206)
    if version < 0x208:
        return None
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = bzimage[start:start + length]
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    if payload.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=io.BytesIO(payload)).read()
    return None


def has_pvh_entry(elf: bytes) -> bool:
    """Whether an ELF64 kernel has the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, 18).

    QEMU boots such a ``vmlinux`` directly (``-kernel vmlinux``), skipping the in-guest
    decompression that costs many seconds under TCG; SeaBIOS still runs first.
    """
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:                     # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


# --- cpio (newc) ----------------------------------------------------------------------------------

class CpioWriter:
    """Writes a cpio archive in the "newc" format the kernel's initramfs unpacker reads.

    Format: ``Documentation/driver-api/early-userspace/buffer-format.rst``: a 110-byte ASCII
    header (magic ``070701`` and 13 eight-digit hex fields), the NUL-terminated name padded to
    4 bytes, the data padded to 4 bytes; the archive ends with the entry ``TRAILER!!!``.
    Timestamps and owners are zero so the same inputs give the same bytes.
    """
    S_IFDIR = 0o040000
    S_IFREG = 0o100000
    S_IFLNK = 0o120000
    S_IFCHR = 0o020000

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 1
        self._closed = False

    def _entry(self, name: str, mode: int, data: bytes = b"", *, rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        if self._closed:
            raise ValueError("the archive is already closed")
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._ino += 1
        out = self._out
        out.write(header + encoded)
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, self.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, self.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, self.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, self.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        """Append the trailer and return the archive."""
        self._entry("TRAILER!!!", 0)
        self._closed = True
        return self._out.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


# --- The image ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GuestImage:
    """A prepared guest: kernel, base initramfs and what went into them.

    ``kernel`` is what QEMU boots: the uncompressed PVH ``vmlinux`` when the kernel has a PVH
    entry (``boot == "pvh"``), else the bzImage (``boot == "bzimage"``).
    """
    kernel: Path
    boot: str
    initramfs: Path
    kernel_package: str
    kernel_version: str
    kernel_release: str
    busybox_version: str
    modules: tuple[str, ...]

    def initrd_with_workload(self, workload: str, dest: Path) -> Path:
        """Write the base initramfs followed by an archive holding ``/workload.sh``."""
        cpio = CpioWriter()
        cpio.file("workload.sh", workload.encode(), 0o755)
        dest.write_bytes(self.initramfs.read_bytes() + gzip_bytes(cpio.finish()))
        return dest


def _build_initramfs(busybox: bytes, modules_dir: Path, order: list[str], release: str) -> bytes:
    cpio = CpioWriter()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", f"lib/modules/{release}", "proc",
              "sys", "tmp", "mnt", "root"):
        cpio.directory(d)
    # The kernel opens /dev/console for init's stdio before anything mounts devtmpfs.
    cpio.char_device("dev/console", 5, 1)
    cpio.file("bin/busybox", busybox, 0o755)
    cpio.symlink("bin/sh", "busybox")
    for name in order:
        cpio.file(f"lib/modules/{release}/{name}.ko", (modules_dir / f"{name}.ko").read_bytes())
    cpio.file("etc/modules", "".join(f"{m}\n" for m in order).encode())
    cpio.file("etc/kernel-release", f"{release}\n".encode())
    cpio.file("init", (_SCRIPTS / "init.sh").read_bytes(), 0o755)
    return gzip_bytes(cpio.finish())


def prepare_guest(*, kernel_package: str | None = None, cache_dir: Path = CACHE_DIR,
                  modules: Iterable[str] = GUEST_MODULES, refresh: bool = False) -> GuestImage:
    """Download, extract and build everything the guest needs; reuse the cache when present.

    ``kernel_package`` pins a ``linux-image-RELEASE-amd64`` package; by default the one in the
    cache is reused, or the one ``linux-image-amd64`` names is fetched. ``refresh`` asks apt
    again which kernel is current and rebuilds what changed.
    """
    with _cache_lock(cache_dir):
        return _prepare_guest(kernel_package, cache_dir, tuple(modules), refresh)


def _prepare_guest(kernel_package: str | None, cache_dir: Path, modules: tuple[str, ...],
                   refresh: bool) -> GuestImage:
    manifest_path = cache_dir / "guest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    # The default kernel is pinned in guest.json once chosen, so runs stay reproducible until
    # --refresh; a kernel asked for by name leaves the default alone.
    default = kernel_package is None
    if default:
        kernel_package = manifest.get("kernel_package") if not refresh else None
        kernel_package = kernel_package or current_kernel_package()
    debs = cache_dir / "debs"
    kernel_deb = download_deb(kernel_package, debs)
    busybox_deb = download_deb(BUSYBOX_PACKAGE, debs)
    kernel_version = deb_version(kernel_deb)
    busybox_version = deb_version(busybox_deb)

    kernel_dir = cache_dir / f"kernel-{kernel_package}-{kernel_version}"
    stamp = kernel_dir / "extracted.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("wanted") == list(modules):
        info = json.loads(stamp.read_text())
        release, order = info["release"], info["order"]
    else:
        log.info("extracting the kernel and %d modules from %s", len(modules), kernel_deb.name)
        release, order = _extract_kernel(kernel_deb, kernel_dir, modules)
        stamp.write_text(json.dumps({"release": release, "order": order,
                                     "wanted": list(modules)}))

    vmlinux = kernel_dir / "vmlinux"
    no_pvh = kernel_dir / "no-pvh"
    if not vmlinux.exists() and not no_pvh.exists():
        elf = bzimage_payload((kernel_dir / "vmlinuz").read_bytes())
        if elf is not None and has_pvh_entry(elf):
            log.info("unpacking vmlinux for PVH boot")
            vmlinux.with_suffix(".tmp").write_bytes(elf)
            vmlinux.with_suffix(".tmp").rename(vmlinux)
        else:
            no_pvh.write_text("this kernel has no PVH entry: QEMU boots the bzImage\n")
    kernel, boot = (vmlinux, "pvh") if vmlinux.exists() else (kernel_dir / "vmlinuz", "bzimage")

    busybox_dir = cache_dir / f"busybox-{re.sub(r'[^A-Za-z0-9.+~-]', '_', busybox_version)}"
    busybox_path = busybox_dir / "busybox"
    if not busybox_path.exists():
        log.info("extracting busybox from %s", busybox_deb.name)
        for member, tar in deb_members(busybox_deb):
            if member.name == "./bin/busybox":
                busybox_dir.mkdir(parents=True, exist_ok=True)
                tmp = busybox_path.with_suffix(".tmp")
                tmp.write_bytes(tar.extractfile(member).read())
                tmp.chmod(0o755)
                tmp.rename(busybox_path)
                break
        else:
            raise GuestSetupError(f"{busybox_deb.name} holds no /bin/busybox")
    busybox = busybox_path.read_bytes()

    digest = hashlib.sha256()
    digest.update(busybox)
    digest.update((_SCRIPTS / "init.sh").read_bytes())
    digest.update(release.encode())
    for name in order:
        digest.update(name.encode())
        digest.update((kernel_dir / "modules" / f"{name}.ko").read_bytes())
    initramfs = cache_dir / f"initramfs-{digest.hexdigest()[:16]}.cpio.gz"
    if not initramfs.exists():
        log.info("building %s", initramfs.name)
        tmp = initramfs.with_suffix(".tmp")
        tmp.write_bytes(_build_initramfs(busybox, kernel_dir / "modules", order, release))
        tmp.rename(initramfs)

    if default:
        manifest_path.write_text(json.dumps({"kernel_package": kernel_package}, indent=1) + "\n")
    return GuestImage(kernel=kernel, boot=boot, initramfs=initramfs,
                      kernel_package=kernel_package, kernel_version=kernel_version,
                      kernel_release=release, busybox_version=busybox_version,
                      modules=tuple(order))


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.logging import RichHandler
    from rich.table import Table

    parser = argparse.ArgumentParser(
        prog="python -m sim.linux.guest",
        description="Prepare the Linux guest for `python -m sim.linux`: install QEMU when it is "
                    "missing (as root), download Debian's kernel and busybox-static with "
                    "apt-get, extract the virtio/ext4 modules and build the initramfs. "
                    f"Everything is cached under {CACHE_DIR}.")
    parser.add_argument("--kernel-package", metavar="PKG",
                        help="a linux-image-RELEASE-amd64 package to use instead of the cached "
                             f"one or the one {KERNEL_META_PACKAGE} names")
    parser.add_argument("--refresh", action="store_true",
                        help="ask apt again which kernel is current and rebuild what changed")
    parser.add_argument("--no-qemu", action="store_true",
                        help="do not check for (or install) QEMU")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    args = parser.parse_args(argv)
    console = Console()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    try:
        qemu = None if args.no_qemu else ensure_qemu()
        image = prepare_guest(kernel_package=args.kernel_package, refresh=args.refresh)
    except GuestSetupError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    table = Table(title="Linux guest", show_header=False)
    table.add_row("QEMU", str(qemu) if qemu else "(not checked)")
    table.add_row("kernel", f"{image.kernel_package} {image.kernel_version}")
    table.add_row("boots", f"{image.kernel} ({image.boot})")
    table.add_row("initramfs", f"{image.initramfs} ({image.initramfs.stat().st_size // 1024} KiB)")
    table.add_row("busybox", image.busybox_version)
    table.add_row("modules", ", ".join(image.modules))
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
