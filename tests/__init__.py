"""Test packages: lets tests/unit and tests/cocotb hold files of the same name (test_reorder_buffer.py)."""
