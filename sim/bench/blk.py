"""Benchmark of the whole virtio-blk device: 4 KiB random reads and writes end to end.

``python -m sim.bench.blk`` builds the device (:mod:`hdl.top`) for each modelled link and
runs, through the cocotbext-pcie root complex and the Linux-like driver model, 4 KiB random
reads and writes (one data buffer each, every read checked against the golden disk) at
several queue depths, with VIRTIO_F_IN_ORDER negotiated and masked off. The disk answers
after 2 cycles, so the link and the device are what is measured.

Figures, all in simulated time; the device's clock is 125 MHz unless ``--clock-mhz`` says
otherwise:

* **link efficiency**: payload bytes per second over the whole run (first submission to last
  completion, at least 4 x QD requests, so filling and draining the queue cost about one
  request latency each) over the payload limit of the link in the
  data's direction for 4 KiB transfers at Max_Payload_Size 256 (8b/10b, framing, sequence
  number, LCRC and a 3 DW header per TLP; ``sim/model/pcie_link.py``). Completions of reads
  and MemWr of writes are both cut at 256 bytes here (the root complex model's RCB splits
  are not finer), so the limit is the same for both.
* **IOPS** and **control TLPs per request**: the device's memory requests to the rings and
  descriptor tables (ring indices and entries, descriptors, indirect tables, used ring,
  event indices) plus its MSI-X writes, from the driver model's traffic monitor
  (``sim/driver/traffic.py``); requests to the buffers (header, data, status) are not
  counted.

``--json FILE`` writes one object per measurement with the keys ``op``, ``qd``, ``link``,
``in_order``, ``link_efficiency``, ``iops``, ``control_tlps_per_request`` (and more);
``--plot FILE`` draws link efficiency against queue depth (matplotlib).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

__all__ = ["main", "run_link"]

LINK_PRESETS = {"gen1x1": "bench_gen1x1", "gen2x4": "bench_gen2x4"}


def run_link(link: str, job: dict, seed: int | None) -> list[dict]:
    """Build the device for ``link`` and run ``job`` (see ``sim.blk_device_tb.bench``)."""
    from sim.blk_device import run_job

    results, error = run_job(LINK_PRESETS[link], "bench", job, seed)
    if error:
        raise AssertionError(error)
    return results["rows"]


def _table(rows: list[dict]) -> Table:
    t = Table(title="virtio-blk, 4 KiB random I/O end to end (simulated)")
    for col in ("link", "clock", "op", "QD", "IN_ORDER", "link eff.", "IOPS", "MB/s",
                "ctrl TLP/req", "run len", "p50 lat", "p99 lat"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["link"], f"{r.get('clock_mhz', 125):g} MHz", r["op"], str(r["qd"]),
                  "on" if r["in_order"] else "off",
                  f"{100 * r['link_efficiency']:.1f} %", f"{r['iops']:,.0f}",
                  f"{r['mb_per_s']:.1f}", f"{r['control_tlps_per_request']:.2f}",
                  f"{r['mean_run_length']:.2f}", _latency(r["latency_p50_ns"]),
                  _latency(r["latency_p99_ns"]))
    return t


def _latency(ns: float) -> str:
    return f"{ns / 1e3:.1f} us" if ns < 1e6 else f"{ns / 1e6:.2f} ms"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    links = sorted({r["link"] for r in rows})
    fig, axes = plt.subplots(1, len(links), figsize=(6 * len(links), 4.2), squeeze=False)
    for ax, link in zip(axes[0], links):
        for op in ("read", "write"):
            for in_order in (True, False):
                pts = sorted((r["qd"], r["link_efficiency"]) for r in rows
                             if r["link"] == link and r["op"] == op
                             and r["in_order"] == in_order)
                if pts:
                    ax.plot([p[0] for p in pts], [100 * p[1] for p in pts],
                            marker="o" if in_order else "x",
                            linestyle="-" if in_order else "--",
                            label=f"{op}, IN_ORDER {'on' if in_order else 'off'}")
        ax.axhline(95, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("queue depth")
        ax.set_ylabel("% of the link's payload limit")
        ax.set_title(f"4 KiB random I/O, {link}")
        ax.set_ylim(0, 105)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sim.bench.blk",
        description="End-to-end 4 KiB random read/write benchmark of the RTL virtio-blk "
                    "device through a modelled PCIe link, IN_ORDER on and off.")
    ap.add_argument("--link", nargs="+", choices=sorted(LINK_PRESETS),
                    default=sorted(LINK_PRESETS), help="links to model (default: all)")
    ap.add_argument("--qd", type=int, nargs="+", default=[1, 8, 32, 64],
                    help="queue depths (default: 1 8 32 64)")
    ap.add_argument("--ops", nargs="+", choices=["read", "write"], default=["read", "write"])
    ap.add_argument("--requests", type=int, default=128,
                    help="requests per measurement, at least 4 x the queue depth (default: 128)")
    ap.add_argument("--in-order", choices=["on", "off", "both"], default="both")
    ap.add_argument("--seed", type=int, default=None, help="simulation seed (default: random)")
    ap.add_argument("--clock-mhz", type=float, default=125.0,
                    help="the device's clock in the simulation (default: 125; the Versa "
                         "ECP5 build targets 62.5)")
    ap.add_argument("--from-json", metavar="FILE", type=Path, nargs="+",
                    help="simulate nothing: print and plot the measurements saved in these "
                         "--json files (e.g. one per link, run in parallel)")
    ap.add_argument("--json", metavar="FILE", type=Path, help="write the measurements as JSON")
    ap.add_argument("--plot", metavar="FILE", type=Path, default=Path("docs/bench/blk.png"),
                    help="where to draw link efficiency against queue depth (PNG; default: "
                         "docs/bench/blk.png)")
    args = ap.parse_args(argv)
    if any(not 1 <= qd <= 64 for qd in args.qd):
        ap.error("queue depths must be 1..64")
    if not 10 <= args.clock_mhz <= 500:
        ap.error("--clock-mhz must be from 10 to 500")
    job = {"queue_depths": args.qd, "ops": args.ops, "requests": args.requests,
           "in_order": {"on": [True], "off": [False], "both": [True, False]}[args.in_order],
           "clock_ns": 1e3 / args.clock_mhz}
    console = Console(width=max(Console().width, 120))
    rows = []
    if args.from_json:
        for path in args.from_json:
            rows += json.loads(path.read_text())
    for link in [] if args.from_json else args.link:
        start = time.monotonic()
        with console.status(f"{link}: building the device and simulating "
                            f"{len(args.qd) * len(args.ops) * len(job['in_order'])} "
                            f"measurements..."):
            try:
                rows += run_link(link, job, args.seed)
            except AssertionError as exc:
                console.print(f"[red]{link}: {exc}[/]")
                return 1
        console.print(f"{link}: done in {time.monotonic() - start:.0f} s")
    console.print(_table(rows))
    console.print("link eff.: payload throughput / payload limit of the link (4 KiB transfers, "
                  "MPS 256); ctrl TLP/req: device memory requests to rings and descriptor "
                  "tables plus MSI-X writes, per request; run len: buffers per used-ring entry.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
        console.print(f"wrote {args.json}")
    if args.plot and rows:
        _plot(rows, args.plot)
        console.print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
