"""cocotb tests: the pytest wrappers import helpers as tests.cocotb.*; the simulator imports the testbenches from this folder directly."""
