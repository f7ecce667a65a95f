"""``python -m sim.demo``: the whole virtio-blk device in RTL simulation, driven like Linux.

Builds the device (Amaranth -> Verilog -> Verilator, cached in ``build/``), enumerates it
through a cocotbext-pcie root complex, negotiates features as Linux's virtio_pci and
virtio_blk do, writes a known pattern over the disk, runs random read / write / flush /
GET_ID mixes at several queue depths with every read checked against a golden disk, reads
the whole disk back, and prints what it saw. Exits 0 when every check passed, 1 when one
failed, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m sim.demo", description=__doc__.split("\n\n")[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--queue-depth", "-q", type=int, nargs="+", default=[1, 8, 32],
                    metavar="QD", help="queue depths to run the random mix at (1..64)")
    ap.add_argument("--requests", "-n", type=int, default=100,
                    help="requests per queue depth")
    ap.add_argument("--no-in-order", dest="in_order", action="store_false",
                    help="mask VIRTIO_F_IN_ORDER off in the driver (it is on by default)")
    ap.add_argument("--build", choices=["msix", "intx"], default="msix",
                    help="device build: MSI-X with 2 queues, or INTx only with 1 queue")
    ap.add_argument("--seed", type=int, default=None,
                    help="random seed (printed when not given; replays a run)")
    ap.add_argument("--waves", action="store_true",
                    help="write a waveform (FST, or VCD without lz4) of the whole run")
    ap.add_argument("--json", metavar="FILE", type=Path,
                    help="also write the results as JSON to FILE")
    return ap


def _check_args(ap: argparse.ArgumentParser, args) -> None:
    if any(not 1 <= qd <= 64 for qd in args.queue_depth):
        ap.error(f"queue depths must be 1..64, not {args.queue_depth}")
    if not 1 <= args.requests <= 100_000:
        ap.error(f"--requests must be 1..100000, not {args.requests}")


def _fmt_ns(ns: float) -> str:
    return f"{ns / 1000:.2f} us" if ns >= 1000 else f"{ns:.0f} ns"


def _report(console: Console, res: dict, wall_s: float) -> None:
    dev = res.get("device")
    if dev:
        console.print(
            f"[bold]Device found[/] {dev['bdf']}: {dev['vendor_id']:04x}:{dev['device_id']:04x} "
            f"class {dev['class_code']:06x} rev {dev['revision_id']:02x}, BAR0 "
            f"{dev['bar0']:#x} ({dev['bar0_size'] // 1024} KiB), "
            f"{'MSI-X %d vectors' % dev['msix'] if dev['msix'] else 'INTx'}, link "
            f"{dev['link']}")
    drv = res.get("driver")
    if drv:
        console.print(f"[bold]Features negotiated[/] {drv['features']:#x}: "
                      f"{', '.join(drv['feature_names'])}")
        console.print(f"[bold]Disk[/] {drv['capacity']} sectors "
                      f"({drv['capacity'] * 512 // 1024} KiB), {drv['queues']} queue(s) of "
                      f"depth {drv['queue_depth']}, seg_max {drv['seg_max']}, interrupts "
                      f"{drv['irq']}")
    fill = res.get("fill")
    if fill:
        console.print(f"[bold]Pattern written[/] over the disk: {fill['requests']} writes in "
                      f"{_fmt_ns(fill['elapsed_ns'])} simulated")
    phases = res.get("phases", [])
    if phases:
        t = Table(title="Random read/write/flush/GET_ID mix, every read checked "
                        "(simulated time, 125 MHz)")
        for col in ("QD", "requests", "IOPS", "MB/s", "run length", "p50", "p90", "p99",
                    "interrupts", "failures"):
            t.add_column(col, justify="right")
        for p in phases:
            lat = p["latency_ns"]
            t.add_row(str(p["queue_depth"]), str(p["requests"]), f"{p['iops']:,.0f}",
                      f"{p['mb_per_s']:.1f}", f"{p['mean_run_length']:.2f}",
                      _fmt_ns(lat["50"]), _fmt_ns(lat["90"]), _fmt_ns(lat["99"]),
                      str(p["interrupts"]), str(p["failure_count"]))
        console.print(t)
        console.print("run length = buffers completed per used-ring entry (in-order batching; "
                      "1.00 without VIRTIO_F_IN_ORDER)")
    for f in res.get("failures", [])[:10]:
        console.print(f"[red]FAIL[/] {f}")
    verdict = "[bold green]PASS[/]" if res.get("ok") else "[bold red]FAIL[/]"
    sim_us = res.get("sim_time_ns", 0) / 1000
    console.print(f"{verdict}: {res.get('failure_count', '?')} failed checks, "
                  f"{sim_us:,.0f} us simulated in {wall_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    _check_args(ap, args)
    console = Console(width=max(Console().width, 110))
    if args.waves:
        os.environ["WAVES"] = "1"
    from sim.blk_device import run_job

    job = {"queue_depths": args.queue_depth, "requests": args.requests,
           "in_order": args.in_order}
    start = time.monotonic()
    with console.status("building the device (Amaranth -> Verilog -> Verilator; cached "
                        "after the first run) and simulating...", spinner="dots"):
        res, error = run_job(args.build, "demo", job, args.seed)
    wall = time.monotonic() - start
    _report(console, res, wall)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    if error:
        console.print(f"[red]{error}[/]")
        return 1
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
