"""Packing and unpacking of Amaranth ``data`` layouts as plain integers.

Amaranth flattens a port with a ``data.Layout`` shape into one Verilog vector; cocotb
testbenches and simulation bridges use these helpers to move between that vector and a dict
of field values, with the field offsets taken from the layout itself.
"""
from __future__ import annotations

from amaranth.lib import data

__all__ = ["pack", "unpack"]


def pack(layout: data.Layout, fields: dict) -> int:
    """Pack ``fields`` (a dict, nested for nested layouts) into an integer.

    Unknown field names and values that do not fit their field raise ``ValueError``.
    """
    layout = data.Layout.cast(layout)
    unknown = set(fields) - {name for name, _ in layout}
    if unknown:
        raise ValueError(f"fields {sorted(unknown)} are not in layout {layout!r}")
    value = 0
    for name, field in layout:
        if name not in fields:
            continue
        item = fields[name]
        if isinstance(field.shape, data.Layout):
            item = pack(field.shape, item) if isinstance(item, dict) else int(item)
        item = int(item)
        if item < 0:
            item &= (1 << field.width) - 1
        if item >> field.width:
            raise ValueError(f"value {item:#x} does not fit field {name!r} of {field.width} bits")
        value |= item << field.offset
    return value


def unpack(layout: data.Layout, value: int) -> dict:
    """Unpack an integer into a dict of field values (nested for nested layouts)."""
    layout = data.Layout.cast(layout)
    value = int(value)
    fields = {}
    for name, field in layout:
        item = (value >> field.offset) & ((1 << field.width) - 1)
        if isinstance(field.shape, data.Layout):
            item = unpack(field.shape, item)
        fields[name] = item
    return fields
