"""``python -m sim.linux``: boot a real Linux guest in QEMU against the device and check it.

By default the device is the RTL (the ``intx`` build of :mod:`sim.blk_device`) simulated with
cocotb and Verilator behind QEMU's multi-process proxy (:mod:`sim.linux.blk_scenario`);
``--device standin`` runs the pure-Python stand-in of phase 1 (:mod:`sim.linux.standin`)
instead. See ``docs/linux-guest.md``.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from sim.linux.guest import CACHE_DIR, GuestSetupError
from sim.linux.proxy import Command
from sim.linux.qemu import FIRMWARE_DONE_LINE, ConsoleLine
from sim.linux.scenario import Report, run_standin

DEVICES = ("rtl", "standin")


def _progress(console: Console, show_console: bool):
    """A console-line callback that prints milestones and the guest's checks as they come."""
    def say(stamp: str, message: str) -> None:
        console.print(f"{stamp} {message}", highlight=False, soft_wrap=True)

    def on_line(line: ConsoleLine) -> None:
        text, stamp = line.text, f"[dim]{line.seconds:6.1f}s[/dim]"
        if FIRMWARE_DONE_LINE in text:
            say(stamp, "firmware done, kernel booting")
        elif text.startswith("CHECK PASS "):
            say(stamp, f"[green]pass[/green] {escape(text[11:])}")
        elif text.startswith("CHECK FAIL "):
            say(stamp, f"[red]FAIL[/red] {escape(text[11:])}")
        elif "SeaBIOS" in text:
            say(stamp, f"firmware: {escape(text.strip())}")
        elif text.startswith("guest: "):
            say(stamp, escape(text))
        elif "workload begin" in text:
            say(stamp, "workload running")
        elif text and (show_console or "Kernel panic" in text or "error" in text.lower()):
            say(stamp, f"[dim]{escape(text)}[/dim]")
    return on_line


def _checks_table(console: Console, report) -> None:
    checks = Table(title="Checks", show_lines=False)
    checks.add_column("where")
    checks.add_column("check")
    checks.add_column("result")
    checks.add_column("detail", overflow="fold")
    for where, items in (("guest", report.guest_checks), ("host", report.host_checks)):
        for check in items:
            checks.add_row(where, check.name,
                           "[green]pass[/green]" if check.passed else "[red]FAIL[/red]",
                           check.detail)
    console.print(checks)


def _secs(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "-"


def _rtl_summary(console: Console, report) -> None:
    from hdl.virtio.spec import feature_names
    from sim.linux.blk_scenario import guest_features

    _checks_table(console, report)
    res, guest = report.result, report.console
    facts = Table(title="Run", show_header=False)
    facts.add_column("what")
    facts.add_column("value", overflow="fold")
    facts.add_row("guest", f"{res.get('kernel', '?')}, busybox {res.get('busybox', '?')}")
    facts.add_row("device", "RTL virtio-blk (hdl/top.py, build 'intx': INTx, 32-bit BAR0, 1 "
                            "queue, 1 MiB disk) in Verilator behind x-pci-proxy-dev, TCG")
    features = guest_features(guest)
    facts.add_row("features negotiated",
                  ", ".join(feature_names(features)) if features is not None else "-")
    for key in ("queues", "max_segments", "interrupts", "diskstats"):
        for value in guest.info_values(key):
            facts.add_row(key.replace("_", " "), value)
    facts.add_row("boot", f"{_secs(report.boot_seconds)} (QEMU start to workload start)")
    facts.add_row("workload", _secs(report.workload_seconds))
    facts.add_row("total", f"{report.seconds:.1f} s (including preparing the guest and the "
                           f"build)")
    counts = res.get("counts", {})
    facts.add_row("proxy messages", ", ".join(f"{c.name} {counts[c.name]}" for c in Command
                                               if counts.get(c.name)))
    dma = res.get("dma", {})
    facts.add_row("device DMA", f"{dma.get('read_requests', 0)} MemRd ({dma.get('read_bytes', 0)} "
                                f"bytes in {dma.get('completions', 0)} CplD), "
                                f"{dma.get('write_requests', 0)} MemWr "
                                f"({dma.get('write_bytes', 0)} bytes)")
    stats = res.get("stats", {})
    facts.add_row("virtqueue engine", f"{stats.get('elements', 0)} requests, "
                                      f"{stats.get('notifications', 0)} notifications")
    facts.add_row("INTx", f"{res.get('intx', {}).get('assertions', 0)} assertion(s); not "
                          f"delivered under TCG (the guest polls with irqpoll)")
    facts.add_row("simulated", f"{res.get('cycles', 0):,} cycles, "
                               f"{res.get('sim_time_ns', 0) / 1e6:.2f} ms at 125 MHz")
    facts.add_row("seed", f"{report.seed} (SEED={report.seed} replays the patterns)")
    console.print(facts)


def _summary(console: Console, report: Report, seconds: float) -> None:
    _checks_table(console, report)

    run, image = report.run, report.image
    facts = Table(title="Run", show_header=False)
    facts.add_column("what")
    facts.add_column("value", overflow="fold")
    facts.add_row("guest", f"{image.kernel_package} {image.kernel_version} ({image.boot} boot), "
                           f"busybox {image.busybox_version}")
    facts.add_row("device", "stand-in (sim/linux/standin.py) behind x-pci-proxy-dev, TCG")

    facts.add_row("boot", f"{_secs(report.boot_seconds)} (QEMU start to workload start)")
    facts.add_row("workload", _secs(report.workload_seconds))
    facts.add_row("total", f"{seconds:.1f} s (including preparing the guest)")
    counts = run.server.counts
    facts.add_row("proxy messages", ", ".join(f"{c.name} {counts[c]}" for c in Command
                                               if counts[c]))
    bars = run.server.bars
    facts.add_row("BAR0", f"{bars.base[0]:#x}, {bars.size[0]:#x} bytes")
    facts.add_row("memory map", ", ".join(f"{r.gpa:#x}+{r.size:#x}" for r in run.memory_map))
    facts.add_row("INTx", f"{run.server.interrupt.assertions} assertion(s); not delivered under TCG")
    facts.add_row("DMA copies", f"{sum(1 for c in report.device.copies if c[3])} done, "
                                f"{sum(1 for c in report.device.copies if not c[3])} refused")
    console.print(facts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.linux",
        description="Boot Debian's Linux in QEMU (TCG) with the device behind QEMU's "
                    "multi-process PCI proxy, run a workload inside the guest and check the "
                    "result from both sides. The device is the RTL virtio-blk device, "
                    "simulated with Verilator through cocotb: the stock virtio_pci and "
                    "virtio_blk drivers bind to it, the guest checks /dev/vda's size and "
                    "serial, writes raw patterns, makes and uses an ext2 file system, and the "
                    "host checks the patterns it drew against what the guest read back. "
                    "'--device standin' runs the phase-1 pure-Python stand-in instead. The "
                    "first run downloads the Debian kernel and busybox-static (and installs "
                    "qemu-system-x86 when missing, as root) and builds the RTL; everything is "
                    f"cached under {CACHE_DIR.parent}. Exit status 0 when every check passed.")
    parser.add_argument("--device", choices=DEVICES, default="rtl",
                        help="the device behind the proxy: the RTL (default) or the stand-in")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="seed of the raw patterns (RTL; default $SEED or random, printed)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run folder (guest.log, the initrd) after a passing run; a "
                             "failing run always keeps it")
    parser.add_argument("--run-dir", type=Path, metavar="DIR",
                        help=f"where to put the run folder (default: a new folder under "
                             f"{CACHE_DIR / 'runs'})")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="kill the guest if it has not powered off by then (default 600 "
                             "for the RTL, 300 for the stand-in)")
    parser.add_argument("--kernel-package", metavar="PKG",
                        help="boot another Debian kernel, e.g. linux-image-6.12.117+deb12-amd64 "
                             "(default: the cached one, else the one linux-image-amd64 names)")
    parser.add_argument("--console", action="store_true",
                        help="print every console line of the guest, not only milestones")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every proxy message and device access")
    args = parser.parse_args(argv)

    console = Console()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    # Downloads and builds of the first run take a minute: say what is going on.
    logging.getLogger("sim.linux.guest").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        # The simulator runner prints the seed and log path itself; cocotb's runner logs every
        # command it runs at INFO.
        logging.getLogger("sim.runner").setLevel(logging.ERROR)
        logging.getLogger("Verilator").setLevel(logging.WARNING)
    run_dir = args.run_dir or CACHE_DIR / "runs" / time.strftime(f"{args.device}-%Y%m%d-%H%M%S")
    started = time.monotonic()
    if args.device == "rtl":
        return _main_rtl(console, args, run_dir)
    console.print(f"preparing the guest (cache {CACHE_DIR})")
    try:
        report = run_standin(run_dir, timeout=args.timeout or 300.0,
                             kernel_package=args.kernel_package,
                             on_line=_progress(console, args.console))
    except GuestSetupError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    seconds = time.monotonic() - started
    _summary(console, report, seconds)
    if report.passed:
        console.print(f"[bold green]PASS[/bold green]: {len(report.checks)} checks passed "
                      f"in {seconds:.1f} s")
    else:
        failed = [c.name for c in report.checks if not c.passed]
        console.print(f"[bold red]FAIL[/bold red]: {', '.join(failed) or 'the guest reported no checks'}")
    if report.passed and not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        console.print(f"guest log: {report.run.log_path}")
    return 0 if report.passed else 1


def _main_rtl(console: Console, args, run_dir: Path) -> int:
    from sim.linux.blk_scenario import run_rtl

    def status(message: str) -> None:
        console.print(f"[bold]{escape(message)}[/bold]", highlight=False)

    try:
        report = run_rtl(run_dir, seed=args.seed, timeout=args.timeout or 600.0,
                         kernel_package=args.kernel_package,
                         on_line=_progress(console, args.console), on_status=status)
    except GuestSetupError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    _rtl_summary(console, report)
    if report.passed:
        console.print(f"[bold green]PASS[/bold green]: {len(report.checks)} checks passed "
                      f"in {report.seconds:.1f} s")
    else:
        failed = [c.name for c in report.checks if not c.passed]
        console.print(f"[bold red]FAIL[/bold red]: "
                      f"{', '.join(failed) or 'the guest reported no checks'}")
        if report.result.get("error"):
            console.print(f"[red]{escape(str(report.result['error']))}[/red]")
    if report.passed and not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        console.print(f"guest log: {report.log_path}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
