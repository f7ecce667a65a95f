"""Command-line behaviour of ``python -m sim.demo`` and ``python -m sim.bench.blk`` that needs
no simulation: help, argument errors, and re-plotting saved measurements."""
import json

import pytest

from sim import demo
from sim.bench import blk as bench


def test_demo_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--help"])
    assert exc.value.code == 0 and "--queue-depth" in capsys.readouterr().out
    for argv in (["-q", "0"], ["-q", "65"], ["-n", "0"], ["--build", "nope"]):
        with pytest.raises(SystemExit) as exc:
            demo.main(argv)
        assert exc.value.code == 2, argv


def test_bench_replots_saved_measurements(tmp_path, capsys):
    rows = [{"op": op, "qd": qd, "link": "gen1x1", "in_order": io,
             "link_efficiency": 0.5 + qd / 200, "iops": 1000.0 * qd,
             "control_tlps_per_request": 3.0, "mb_per_s": 100.0, "mean_run_length": 1.5,
             "latency_p50_ns": 1000.0, "latency_p99_ns": 2000.0}
            for op in ("read", "write") for qd in (1, 32) for io in (True, False)]
    saved = tmp_path / "gen1x1.json"
    saved.write_text(json.dumps(rows))
    plot, out = tmp_path / "blk.png", tmp_path / "all.json"
    assert bench.main(["--from-json", str(saved), "--plot", str(plot), "--json", str(out)]) == 0
    assert plot.stat().st_size > 10_000
    assert json.loads(out.read_text()) == rows
    text = capsys.readouterr().out
    assert "66.0 %" in text and "gen1x1" in text


def test_bench_refuses_bad_queue_depths():
    with pytest.raises(SystemExit) as exc:
        bench.main(["--qd", "0"])
    assert exc.value.code == 2
