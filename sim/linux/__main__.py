"""``python -m sim.linux``: boot a real Linux guest in QEMU against the device and check it.

This phase runs the pure-Python stand-in device (:mod:`sim.linux.standin`) behind QEMU's
multi-process proxy; see ``docs/linux-guest.md``.
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


def _summary(console: Console, report: Report, seconds: float) -> None:
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

    run, image = report.run, report.image
    facts = Table(title="Run", show_header=False)
    facts.add_column("what")
    facts.add_column("value", overflow="fold")
    facts.add_row("guest", f"{image.kernel_package} {image.kernel_version} ({image.boot} boot), "
                           f"busybox {image.busybox_version}")
    facts.add_row("device", "stand-in (sim/linux/standin.py) behind x-pci-proxy-dev, TCG")

    def secs(value: float | None) -> str:
        return f"{value:.1f} s" if value is not None else "-"

    facts.add_row("boot", f"{secs(report.boot_seconds)} (QEMU start to workload start)")
    facts.add_row("workload", secs(report.workload_seconds))
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
                    "result from both sides. This phase uses the pure-Python stand-in device: "
                    "the guest finds it in sysfs, reads and writes its registers with devmem, "
                    "and has it copy buffers in guest memory by DMA. The first run downloads "
                    "the Debian kernel and busybox-static (and installs qemu-system-x86 when "
                    f"missing, as root); everything is cached under {CACHE_DIR}.")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run folder (guest.log, the initrd) after a passing run; a "
                             "failing run always keeps it")
    parser.add_argument("--run-dir", type=Path, metavar="DIR",
                        help=f"where to put the run folder (default: a new folder under "
                             f"{CACHE_DIR / 'runs'})")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="kill the guest if it has not powered off by then (default 300)")
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
    run_dir = args.run_dir or CACHE_DIR / "runs" / time.strftime("standin-%Y%m%d-%H%M%S")
    started = time.monotonic()
    console.print(f"preparing the guest (cache {CACHE_DIR})")
    try:
        report = run_standin(run_dir, timeout=args.timeout, kernel_package=args.kernel_package,
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


if __name__ == "__main__":
    sys.exit(main())
