"""Reading Vivado's reports for report.json.

Vivado is not available here, so the excerpts below are written by hand in the table layout
Vivado's report_utilization and report_timing_summary print (two column sets, with and without
the "Prohibited" column of newer versions); they test the parsing, not Vivado.
"""
from boards.nitefury import read_vivado_utilization, read_vivado_wns

UTIL_OLD = """
1. Slice Logic
--------------
+----------------------------+------+-------+-----------+-------+
|          Site Type         | Used | Fixed | Available | Util% |
+----------------------------+------+-------+-----------+-------+
| Slice LUTs                 | 4321 |     0 |    133800 |  3.23 |
|   LUT as Logic             | 4000 |     0 |    133800 |  2.99 |
| Slice Registers            | 5432 |     0 |    267600 |  2.03 |
+----------------------------+------+-------+-----------+-------+
3. Memory
+-------------------+------+-------+-----------+-------+
| Block RAM Tile    |  7.5 |     0 |       365 |  2.05 |
+-------------------+------+-------+-----------+-------+
4. DSP
+-----------+------+-------+-----------+-------+
| DSPs      |    2 |     0 |       740 |  0.27 |
+-----------+------+-------+-----------+-------+
"""

UTIL_NEW = """
| Slice LUTs*                | 1200 |     0 |          0 |    133800 |  0.90 |
| Slice Registers            | 2400 |     0 |          0 |    267600 |  0.90 |
| Block RAM Tile             |    4 |     0 |          0 |       365 |  1.10 |
| DSPs                       |    0 |     0 |          0 |       740 |  0.00 |
"""

TIMING = """
------------------------------------------------------------------------------------------------
| Design Timing Summary
| ---------------------
------------------------------------------------------------------------------------------------

    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)
    -------      -------  ---------------------  -------------------      -------      -------
     -0.412       -3.100                     12                 9876        0.051        0.000
"""


def test_utilization_both_layouts():
    assert read_vivado_utilization(UTIL_OLD) == {
        "lut": (4321, 133800), "ff": (5432, 267600), "bram": (8, 365), "dsp": (2, 740)}
    assert read_vivado_utilization(UTIL_NEW) == {
        "lut": (1200, 133800), "ff": (2400, 267600), "bram": (4, 365), "dsp": (0, 740)}


def test_worst_negative_slack():
    assert read_vivado_wns(TIMING) == -0.412
    assert read_vivado_wns("no summary here") is None
