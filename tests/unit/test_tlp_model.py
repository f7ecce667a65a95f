"""The Python TLP model against cocotbext-pcie's independent TLP packer, and the bridge's
``Tlp`` <-> model conversion (pure Python, no simulator)."""
import random

import pytest
from cocotbext.pcie.core.tlp import Tlp

from sim.amaranth_streams import seed_for
from sim.model import tlp as model
from sim.pcie_bridge import model_to_tlp, tlp_to_model


def _packed_dws(tlp: Tlp) -> list[int]:
    raw = tlp.pack()
    n_hdr = tlp.get_header_size()
    hdr = [int.from_bytes(raw[i:i + 4], "big") for i in range(0, n_hdr, 4)]
    return hdr + model.bytes_to_dws(bytes(raw[n_hdr:]))


@pytest.mark.parametrize("kind", ["mrd", "mwr", "cfg", "cpl", "io"])
def test_encode_matches_cocotbext_pack(kind):
    rng = random.Random(seed_for(f"test_encode_matches_cocotbext_pack[{kind}]"))
    for _ in range(200):
        hdr, payload = model.random_tlp(rng, kinds=(kind,))
        if kind in ("mrd", "mwr"):
            hdr["addr"] &= ~0xFFF       # keep cocotbext's 4 KiB check quiet
        dws = model.encode(hdr, payload)
        tlp = model_to_tlp(hdr, payload)
        assert _packed_dws(tlp) == dws, (hdr, payload)
        # ... and back: decode inverts encode, the bridge conversion inverts itself.
        assert model.decode(dws) == (hdr, payload)
        assert tlp_to_model(Tlp.unpack(tlp.pack())) == (hdr, payload)


def test_message_fields():
    """Assert_INTA as §2.2.8.1 draws it: Msg, routing 100b, code 20h, 4 DW header."""
    hdr = model.empty_header() | dict(fmt_type=0x34, requester_id=0x0100, msg_code=0x20)
    assert model.encode(hdr) == [0x3400_0000, 0x0100_0020, 0, 0]
    assert model.kind(0x34) == "message" and model.is_posted(0x34)


def test_length_checked():
    hdr = model.empty_header() | dict(fmt_type=0x40, length=2, first_be=0xF, last_be=0xF)
    with pytest.raises(ValueError, match="Length field says 2 DW"):
        model.encode(hdr, [1])
