"""DmaEngine on Verilator, driven at the decoded TLP stream level by sim.dma_harness."""
import pytest

from hdl.pcie.dma import DmaEngine
from sim.runner import run

CONFIGS = {
    # two channels of each kind sharing 32 tags (so tags run out)
    "w64": dict(width=64, read_channels=2, write_channels=2, tags=32,
                cpl_buffer_bytes=4096, read_slots=32, timeout=10_000),
    # 128-bit, Extended Tags: one channel can have 64 reads outstanding
    "w128": dict(width=128, read_channels=1, write_channels=1, tags=64,
                 cpl_buffer_bytes=8192, read_slots=64, timeout=10_000),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_dma_engine(config):
    params = CONFIGS[config]
    run(lambda: DmaEngine(**params), toplevel="dma_engine", test_module="dma_engine_tb",
        params=params)
