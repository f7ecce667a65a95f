"""Unit tests of the pure-Python parts of sim/dma_port_model.py (no simulator needed)."""
import random

from hdl.pcie.dma_port import dma_cmd_layout, read_data_layout
from hdl.virtio.virtqueue_port import VirtqElemDesc
from sim.dma_port_model import LayoutCodec, tlp_count
from sim.layout import pack, unpack


def test_tlp_count_split_rule():
    # Max size and 4 KiB boundaries (PCIe Base §2.2.7), counted independently here.
    assert tlp_count(0x1000, 2, 512) == 1
    assert tlp_count(0x1000, 512, 512) == 1
    assert tlp_count(0x1000, 513, 512) == 2
    assert tlp_count(0x11F0, 32, 512) == 2         # crosses a 512-byte boundary
    assert tlp_count(0x1FF8, 16, 4096) == 2        # crosses a 4 KiB page
    assert tlp_count(0x1004, 4096, 256) == 17      # 252 + 15 * 256 + 4
    rng = random.Random(1)
    for _ in range(200):
        addr, length = rng.randrange(1 << 20), rng.randint(1, 9000)
        size = rng.choice((128, 256, 512, 1024))
        pieces, a, n = 0, addr, length
        while n:        # byte by byte: a new TLP at every size / page boundary
            step = 1
            while step < n and (a + step) % size and (a + step) % 4096:
                step += 1
            a, n, pieces = a + step, n - step, pieces + 1
        assert tlp_count(addr, length, size) == pieces


def test_layout_codec_matches_sim_layout():
    rng = random.Random(2)
    for layout in (dma_cmd_layout, read_data_layout(64), VirtqElemDesc(7)):
        codec = LayoutCodec(layout)
        for _ in range(50):
            fields = {name: rng.randrange(1 << field.width) for name, field in layout}
            word = pack(layout, fields)
            assert codec.pack(fields) == word
            assert codec.unpack(word) == unpack(layout, word)
