"""PcieFunction through cocotbext-pcie's RootComplex on Verilator (cocotb tests in
``pcie_function_tb.py``), built three ways: 64-bit stream / 32-bit BAR0 / MSI-X, 128-bit
stream / 64-bit BAR0 / MSI-X, and 64-bit stream / 32-bit BAR0 / INTx only."""
import pytest

from sim.example_function import example_function
from sim.runner import run

BUILDS = {
    "w64_bar32_msix": dict(width=64, bar_64bit=False, msix_vectors=4, link_speed=1,
                           link_width=1),
    "w128_bar64_msix": dict(width=128, bar_64bit=True, msix_vectors=4, link_speed=2,
                            link_width=4),
    "w64_bar32_intx": dict(width=64, bar_64bit=False, msix_vectors=0, link_speed=1,
                           link_width=1),
}


@pytest.mark.parametrize("build", BUILDS)
def test_pcie_function(build):
    params = BUILDS[build]
    run(lambda: example_function(**params), toplevel="pcie_function",
        test_module="pcie_function_tb", params=params)
