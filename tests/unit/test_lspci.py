"""sim.lspci's decoder on a configuration image built by the spec model (no simulation)."""
from sim.example_function import virtio_vendor_caps
from sim.lspci import format_lspci
from sim.model.config_space import CAP_MSIX, CAP_PCIE, CAP_PM, CAP_VENDOR, ConfigSpaceModel


def _image():
    model = ConfigSpaceModel(msix_vectors=4, link_speed=2, link_width=4,
                             vendor_caps=[(bytes(c.body), c.forward) for c in virtio_vendor_caps()])
    caps = [(CAP_PM, 0x40), (CAP_PCIE, 0x48), (CAP_MSIX, 0x84)]
    caps += [(CAP_VENDOR, off) for off in (0x90, 0xA0, 0xB4, 0xC4, 0xD4)]
    img = model.image(caps)
    img.write(0x10 // 4, 0xC000_0000, 0xF)      # as the root complex would assign it
    img.write(0x04 // 4, 0x0006, 0x3)
    return bytes(img.value)


def test_lspci_decodes_the_model_image():
    text = format_lspci(_image(), bdf="01:00.0",
                        bars=[{"index": 0, "addr": 0xC000_0000, "size": 0x8000, "raw": 0}])
    lines = text.splitlines()
    assert lines[0] == "01:00.0 SCSI storage controller: Red Hat, Inc. Virtio 1.0 block device (rev 01)"
    assert "\tControl: I/O- Mem+ BusMaster+" in text
    assert "\tRegion 0: Memory at c0000000 (32-bit, non-prefetchable) [size=32K]" in lines
    assert "\tCapabilities: [40] Power Management version 3" in lines
    assert "\tCapabilities: [48] Express (v2) Endpoint, MSI 00" in lines
    assert "\t\tLnkCap:\tPort #0, Speed 5GT/s, Width x4, ASPM not supported" in lines
    assert "\t\tLnkCap2: Supported Link Speeds: 2.5GT/s, 5GT/s, Crosslink-" in lines
    assert "\tCapabilities: [84] MSI-X: Enable- Count=4 Masked-" in lines
    assert "\t\tVector table: BAR=0 offset=00004000" in lines
    assert "\tCapabilities: [a0] Vendor Specific Information: VirtIO: Notify" in lines
    assert "\t\tBAR=0 offset=00003000 size=00001000 multiplier=00000004" in lines
    assert "\tCapabilities: [d4] Vendor Specific Information: VirtIO: PCICfg" in lines
    assert lines[-16] == "00: f4 1a 42 10 06 00 10 00 01 00 00 01 00 00 00 00"
    assert [ln[:3] for ln in lines[-16:]] == [f"{16 * i:02x}:" for i in range(16)]
