"""DMA engine throughput: ``python -m sim.bench.dma --help``.

Runs :class:`hdl.pcie.dma.DmaEngine` on Verilator behind a modelled PCIe link
(:mod:`sim.model.pcie_link`) and a host memory model (:mod:`sim.model.pcie_host`) and
reports, per transfer size, read and write throughput as a fraction of

* the engine's data path (``width / 8`` bytes per clock), and
* the payload limit of the link: raw bytes after 8b/10b, less 20 bytes of framing,
  sequence number, 3 DW header and LCRC per TLP of at most Max_Payload_Size (DLLPs not
  counted).

One client channel is kept busy with back-to-back commands of the given size (each starting
on a 4 KiB boundary; at least two, and at least ``--total`` bytes). Sustained throughput:
for reads, the bytes of commands 2..N over the time from the last byte of command 1 to the
last byte of command N (so the first request's one-time latency is not counted as lost
bandwidth); for writes, all bytes over the time from the first command accepted to the last
MemWr across the link.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from hdl.pcie.dma import DmaEngine
from sim.model.pcie_link import LINKS, payload_limit
from sim.runner import build, run

log = logging.getLogger(__name__)

CLOCK_HZ = 125e6
SIZES = [64 << i for i in range(11)]        # 64 B .. 64 KiB


def engine_params(width: int) -> dict:
    return dict(width=width, read_channels=1, write_channels=1, tags=32,
                cpl_buffer_bytes=4096 if width == 64 else 8192, read_slots=32,
                timeout=125_000)


def make_plan(args) -> list[dict]:
    plan = []
    for direction in args.directions:
        for link in args.links:
            for latency in args.latency:
                for mps in args.mps:
                    for size in args.sizes:
                        plan.append(dict(direction=direction, size=size, link=link,
                                         latency_us=latency, mps=mps, mrrs=args.mrrs,
                                         total=max(args.total, 2 * size)))
    return plan


def _run_chunk(job: tuple[int, list[dict], dict]) -> list[dict]:
    index, plan, params = job
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        run(lambda: DmaEngine(**params), toplevel="dma_bench", test_module="sim.bench.dma_tb",
            params=params, seed=index,
            extra_env={"BENCH_PLAN": json.dumps(plan), "BENCH_OUT": str(out)})
        return json.loads(out.read_text())


def evaluate(results: list[dict], width: int) -> list[dict]:
    rows = []
    for r in results:
        limit = payload_limit(LINKS[r["link"]], CLOCK_HZ, r["size"], r["mps"])
        rows.append(dict(direction=r["direction"], size=r["size"], link=r["link"],
                         latency_us=r["latency_us"], mps=r["mps"],
                         link_efficiency=round(r["bytes_per_clock"] / limit, 4),
                         datapath_efficiency=round(r["bytes_per_clock"] / (width // 8), 4),
                         mbytes_per_s=round(r["bytes_per_clock"] * CLOCK_HZ / 1e6, 1),
                         clocks=r["clocks"], count=r["count"]))
    return rows


def _size_label(size: int) -> str:
    return f"{size // 1024}K" if size >= 1024 else str(size)


def tables(rows: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, body) per direction: one row per link/latency/MPS, one column per
    size, cells "link% / data path%"."""
    out = []
    for direction in ("read", "write"):
        sel = [r for r in rows if r["direction"] == direction]
        if not sel:
            continue
        sizes = sorted({r["size"] for r in sel})
        keys = sorted({(r["link"], r["latency_us"], r["mps"]) for r in sel})
        header = ["link", "lat us", "MPS"] + [_size_label(s) for s in sizes]
        body = []
        for link, lat, mps in keys:
            cells = []
            for s in sizes:
                r = next((r for r in sel if (r["link"], r["latency_us"], r["mps"], r["size"])
                          == (link, lat, mps, s)), None)
                cells.append("" if r is None else
                             f"{100 * r['link_efficiency']:.0f}/{100 * r['datapath_efficiency']:.0f}")
            body.append([link, f"{lat:g}", str(mps)] + cells)
        out.append((f"{direction}: % of link payload limit / % of engine data path",
                    header, body))
    return out


def markdown(rows: list[dict]) -> str:
    text = []
    for title, header, body in tables(rows):
        text.append(f"**{title}**\n")
        text.append("| " + " | ".join(header) + " |")
        text.append("|" + "---|" * len(header))
        for line in body:
            text.append("| " + " | ".join(line) + " |")
        text.append("")
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.bench.dma",
        description="Measure DMA engine read/write throughput behind modelled PCIe links.")
    parser.add_argument("--directions", nargs="+", choices=["read", "write"],
                        default=["read", "write"], help="transfer directions (default both)")
    parser.add_argument("--sizes", nargs="+", type=int, default=SIZES,
                        help="transfer sizes in bytes (default 64 .. 65536, powers of two)")
    parser.add_argument("--links", nargs="+", choices=sorted(LINKS), default=sorted(LINKS),
                        help="modelled links (default all)")
    parser.add_argument("--latency", nargs="+", type=float, default=[0.5, 1.0],
                        help="host completion latency in microseconds (default 0.5 1)")
    parser.add_argument("--mps", nargs="+", type=int, choices=[128, 256, 512, 1024],
                        default=[128, 256], help="Max_Payload_Size in bytes (default 128 256)")
    parser.add_argument("--mrrs", type=int, choices=[128, 256, 512, 1024, 2048, 4096],
                        default=512, help="Max_Read_Request_Size in bytes (default 512)")
    parser.add_argument("--total", type=int, default=16384,
                        help="at least this many bytes per measurement (default 16384)")
    parser.add_argument("--width", type=int, choices=[64, 128], default=64,
                        help="engine data width in bits (default 64)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="simulations run in parallel (default 1)")
    parser.add_argument("--json", metavar="FILE", help="write one JSON object per measurement")
    parser.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown")
    parser.add_argument("--quick", action="store_true",
                        help="sizes 64, 4096 and 65536, latency 1 us, MPS 256 only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.sizes, args.latency, args.mps = [64, 4096, 65536], [1.0], [256]
    for size in args.sizes:
        if not 1 <= size <= 65536:
            parser.error(f"size {size} is outside 1..65536")

    # Wide tables: without a terminal rich would cut them at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 160)
    params = engine_params(args.width)
    plan = make_plan(args)
    console.print(f"[bold]DMA engine[/] {params}")
    console.print(f"{len(plan)} measurements at {CLOCK_HZ / 1e6:g} MHz; building the model...")
    build(lambda: DmaEngine(**params), toplevel="dma_bench", params=params)
    log.info("running %d measurements in %d simulations", len(plan), max(1, args.jobs))

    jobs = max(1, args.jobs)
    chunks = [plan[i::jobs] for i in range(jobs)]
    results = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("simulating", total=jobs)
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
            for res in pool.map(_run_chunk, [(i, c, params) for i, c in enumerate(chunks)]):
                results += res
                progress.advance(task)

    rows = evaluate(results, args.width)
    rows.sort(key=lambda r: (r["direction"], r["link"], r["latency_us"], r["mps"], r["size"]))
    for title, header, body in tables(rows):
        table = Table(title=title)
        for h in header:
            table.add_column(h, justify="right")
        for line in body:
            table.add_row(*line)
        console.print(table)
    if args.json:
        keys = ("direction", "size", "link", "latency_us", "mps", "link_efficiency",
                "datapath_efficiency")
        Path(args.json).write_text(json.dumps([{k: r[k] for k in keys} | {
            "mbytes_per_s": r["mbytes_per_s"]} for r in rows], indent=1))
        console.print(f"wrote {args.json}")
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows))
        console.print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
