"""PCI Express constants, TLP formats and the project's TLP stream layouts.

Section numbers refer to the PCI Express Base Specification, Revision 4.0 (the 3.x and 5.0
numbering of chapter 2 is the same). Every module of the project (RTL, models, bridge, tests)
takes PCIe constants from here.

Two stream formats cross the PCIe side of the design (see ``docs/tlp-stream.md``):

* the **raw TLP stream** (:func:`raw_tlp_signature`): whole TLPs as on the wire, ``W``-bit
  beats of ``W // 32`` DW lanes (lane ``i`` = bits ``32*i+31 .. 32*i``), header DWs first, then
  payload DWs, packed densely from lane 0 of the first beat. Header DWs use the spec's bit
  numbering (TLP byte 0 in bits 31:24 of DW0); payload DWs are in host-memory byte order
  (the byte at the lowest address in bits 7:0). ``keep`` marks the lanes that hold a DW,
  ``first``/``last`` mark the first and the last beat of a TLP. A PCIe core connects here.
* the **decoded TLP stream** (:func:`tlp_signature`): the header decoded into
  :data:`TlpHeader` (constant on every beat of a TLP) beside the payload only, realigned so
  that payload DW 0 sits in lane 0 of the first beat. A TLP without payload is a single beat
  with ``keep == 0``. Only the depacketizer and the packetizer convert between the two.
"""
from amaranth.lib import enum

from amaranth.hdl import unsigned
from amaranth.lib import data, stream

__all__ = [
    "TlpFmt", "TlpFmtType", "CplStatus", "MsgCode", "MsgRouting",
    "TlpDW0", "TlpReqDW1", "TlpCplDW1", "TlpCplDW2", "TlpCfgDW2", "TlpMsgDW1",
    "TlpHeader", "tlp_beat_layout", "raw_tlp_beat_layout", "tlp_signature", "raw_tlp_signature",
    "check_tlp_width", "Cfg", "CapId", "ExtCapId", "PcieCap", "PmCap", "MsixCap",
    "MSIX_ENTRY_BYTES", "MSIX_MAX_VECTORS",
    "MPS_BYTES", "MRRS_BYTES", "RCB_BYTES", "FunctionControl",
]


# --- TLP header fields (§2.2.1, §2.2.2) ----------------------------------------------------

class TlpFmt(enum.Enum, shape=3):
    """Fmt field of DW0 (§2.2.1, Table 2-2)."""
    DW3_NODATA = 0b000
    DW4_NODATA = 0b001
    DW3_DATA = 0b010
    DW4_DATA = 0b011
    PREFIX = 0b100


class TlpFmtType(enum.Enum, shape=8):
    """Fmt[2:0] and Type[4:0] of DW0 together, as one byte (§2.2.1, Table 2-3).

    Messages keep their routing sub-field (r[2:0]) in the low three bits of Type; the
    values here are routed-to-root-complex (``MSG``/``MSGD``) and local (``MSG_LOCAL``).
    """
    MRD32 = 0x00
    MRD64 = 0x20
    MRDLK32 = 0x01
    MRDLK64 = 0x21
    MWR32 = 0x40
    MWR64 = 0x60
    IORD = 0x02
    IOWR = 0x42
    CFGRD0 = 0x04
    CFGWR0 = 0x44
    CFGRD1 = 0x05
    CFGWR1 = 0x45
    MSG = 0x30          # Msg, routed to root complex
    MSG_LOCAL = 0x34    # Msg, local - terminate at receiver (INTx messages use this routing)
    MSGD = 0x70
    MSGD_LOCAL = 0x74
    CPL = 0x0A
    CPLD = 0x4A
    CPLLK = 0x0B
    CPLDLK = 0x4B


class MsgRouting(enum.Enum, shape=3):
    """Message routing sub-field r[2:0] (§2.2.8, Table 2-18)."""
    TO_RC = 0b000
    BY_ADDR = 0b001
    BY_ID = 0b010
    BROADCAST = 0b011
    LOCAL = 0b100
    GATHER = 0b101


class CplStatus(enum.Enum, shape=3):
    """Completion Status (§2.2.9, Table 2-34)."""
    SC = 0b000
    UR = 0b001
    CRS = 0b010
    CA = 0b100


class MsgCode(enum.Enum, shape=8):
    """Message codes used by an endpoint (§2.2.8.1, INTx; §2.2.8.3, errors)."""
    ASSERT_INTA = 0x20
    DEASSERT_INTA = 0x24
    ERR_COR = 0x30
    ERR_NONFATAL = 0x31
    ERR_FATAL = 0x33


# The raw header as it sits in a DW lane: LSB-first field order, so bit 31 of the DW is the
# first bit of TLP byte 0 (§2.2.1, Figure 2-5 and the per-type figures).
TlpDW0 = data.StructLayout({
    "length": 10,   # payload length in DW, 0 = 1024
    "at": 2,
    "attr": 2,      # attr[1:0]: relaxed ordering (bit 13), no snoop (bit 12)
    "ep": 1,        # poisoned
    "td": 1,        # TLP digest present
    "th": 1,
    "ln": 1,
    "attr2": 1,     # ID-based ordering
    "t8": 1,
    "tc": 3,
    "t9": 1,
    "fmt_type": TlpFmtType,
})

TlpReqDW1 = data.StructLayout({     # memory, I/O and configuration requests (§2.2.4, §2.2.6.2)
    "first_be": 4,
    "last_be": 4,
    "tag": 8,
    "requester_id": 16,
})

TlpMsgDW1 = data.StructLayout({     # messages (§2.2.8)
    "code": 8,
    "tag": 8,
    "requester_id": 16,
})

TlpCplDW1 = data.StructLayout({     # completions (§2.2.9, Figure 2-33)
    "byte_count": 12,   # 0 means 4096
    "bcm": 1,
    "status": CplStatus,
    "completer_id": 16,
})

TlpCplDW2 = data.StructLayout({
    "lower_address": 7,
    "rsvd": 1,
    "tag": 8,
    "requester_id": 16,
})

TlpCfgDW2 = data.StructLayout({     # configuration requests (§2.2.7, Figure 2-31)
    "rsvd0": 2,
    "reg": 6,           # register number (DW index within the first 256 bytes)
    "ext_reg": 4,       # extended register number
    "rsvd1": 4,
    "function": 3,
    "device": 5,
    "bus": 8,
})


# --- Decoded TLP stream ---------------------------------------------------------------------

# Every field a TLP of any type this design sends or receives can carry, decoded. Fields that
# a TLP's type does not have are zero on the decoded stream and ignored by the packetizer.
TlpHeader = data.StructLayout({
    "fmt_type": TlpFmtType,
    "tc": 3,
    "attr": 3,              # {attr2 (IDO), relaxed ordering, no snoop}
    "ep": 1,                # poisoned
    "length": 10,           # payload / requested length in DW, 0 = 1024
    "requester_id": 16,     # requests and completions
    "tag": 8,
    "first_be": 4,          # memory / I/O / configuration requests
    "last_be": 4,
    "addr": 64,             # memory requests: byte address, bits 1:0 are zero
    "completer_id": 16,     # completions
    "status": CplStatus,
    "bcm": 1,
    "byte_count": 12,       # 0 means 4096
    "lower_address": 7,
    "cfg_bus": 8,           # configuration requests: target ID and register (DW) number
    "cfg_device": 5,
    "cfg_function": 3,
    "cfg_reg": 10,          # {ext_reg, reg}: DW index 0..1023 in the 4 KiB space
    "msg_code": 8,          # messages
})

_TLP_WIDTHS = (64, 128)


def check_tlp_width(width: int) -> int:
    """Validate a TLP stream width in bits (64 or 128) and return it."""
    if width not in _TLP_WIDTHS:
        raise ValueError(f"TLP stream width must be one of {_TLP_WIDTHS} bits, not {width!r}")
    return width


def raw_tlp_beat_layout(width: int = 64) -> data.StructLayout:
    """One beat of the raw TLP stream: ``width // 32`` DW lanes."""
    check_tlp_width(width)
    return data.StructLayout({
        "data": unsigned(width),
        "keep": unsigned(width // 32),
        "first": 1,
        "last": 1,
    })


def tlp_beat_layout(width: int = 64) -> data.StructLayout:
    """One beat of the decoded TLP stream: the decoded header beside realigned payload."""
    check_tlp_width(width)
    return data.StructLayout({
        "hdr": TlpHeader,
        "data": unsigned(width),
        "keep": unsigned(width // 32),
        "first": 1,
        "last": 1,
    })


def raw_tlp_signature(width: int = 64) -> stream.Signature:
    """Signature of a raw TLP stream source (use ``In(...)`` for the sink side)."""
    return stream.Signature(raw_tlp_beat_layout(width))


def tlp_signature(width: int = 64) -> stream.Signature:
    """Signature of a decoded TLP stream source (use ``In(...)`` for the sink side)."""
    return stream.Signature(tlp_beat_layout(width))


# --- Configuration space (PCI Local Bus 3.0 §6.1 and PCIe Base §7.5.1) ----------------------

class Cfg:
    """Type 0 configuration header byte offsets (§7.5.1.1 and §7.5.1.2)."""
    VENDOR_ID = 0x00
    DEVICE_ID = 0x02
    COMMAND = 0x04
    STATUS = 0x06
    REVISION_ID = 0x08
    CLASS_CODE = 0x09           # 3 bytes: prog-if, subclass, base class
    CACHE_LINE_SIZE = 0x0C
    LATENCY_TIMER = 0x0D
    HEADER_TYPE = 0x0E
    BIST = 0x0F
    BAR0 = 0x10                 # BAR0..BAR5 at 0x10, 0x14, ..., 0x24
    CARDBUS_CIS = 0x28
    SUBSYSTEM_VENDOR_ID = 0x2C
    SUBSYSTEM_ID = 0x2E
    EXPANSION_ROM = 0x30
    CAP_PTR = 0x34
    INTERRUPT_LINE = 0x3C
    INTERRUPT_PIN = 0x3D
    MIN_GNT = 0x3E
    MAX_LAT = 0x3F

    # Command register bits (§7.5.1.1.3)
    CMD_IO_SPACE = 1 << 0
    CMD_MEMORY_SPACE = 1 << 1
    CMD_BUS_MASTER = 1 << 2
    CMD_PARITY_ERROR_RESPONSE = 1 << 6
    CMD_SERR_ENABLE = 1 << 8
    CMD_INTERRUPT_DISABLE = 1 << 10

    # Status register bits (§7.5.1.1.4); bits 15:8 other than 11 are RW1C where implemented
    STS_INTERRUPT_STATUS = 1 << 3
    STS_CAPABILITIES_LIST = 1 << 4
    STS_MASTER_DATA_PARITY_ERROR = 1 << 8
    STS_SIGNALED_TARGET_ABORT = 1 << 11
    STS_RECEIVED_TARGET_ABORT = 1 << 12
    STS_RECEIVED_MASTER_ABORT = 1 << 13
    STS_SIGNALED_SYSTEM_ERROR = 1 << 14
    STS_DETECTED_PARITY_ERROR = 1 << 15


class CapId:
    """Capability IDs (PCI Code and ID Assignment Specification §2)."""
    PM = 0x01
    MSI = 0x05
    VENDOR = 0x09
    PCIE = 0x10
    MSIX = 0x11


class ExtCapId:
    """Extended capability IDs (PCI Code and ID Assignment Specification §3)."""
    NULL = 0x0000


class PcieCap:
    """PCI Express capability register offsets from the capability start (§7.5.3)."""
    CAP = 0x02                  # PCI Express Capabilities register
    DEV_CAP = 0x04
    DEV_CTL = 0x08
    DEV_STA = 0x0A
    LINK_CAP = 0x0C
    LINK_CTL = 0x10
    LINK_STA = 0x12
    DEV_CAP2 = 0x24
    DEV_CTL2 = 0x28
    LINK_CAP2 = 0x2C
    LINK_CTL2 = 0x30
    LINK_STA2 = 0x32
    SIZE = 0x3C

    # Device Control fields (§7.5.3.4)
    DEV_CTL_EXT_TAG = 1 << 8
    DEV_CTL_MPS_SHIFT = 5       # Max_Payload_Size, 3 bits: 128 << n bytes
    DEV_CTL_MRRS_SHIFT = 12     # Max_Read_Request_Size, 3 bits: 128 << n bytes

    # PCI Express Capabilities register (§7.5.3.2): capability version 2, Device/Port Type
    # in bits 7:4 (0000b = PCI Express Endpoint).
    CAP_VERSION = 2
    TYPE_ENDPOINT = 0b0000

    # Device Capabilities (§7.5.3.3)
    DEV_CAP_EXT_TAG = 1 << 5
    DEV_CAP_ROLE_BASED_ERR = 1 << 15

    # Device Status (§7.5.3.5)
    DEV_STA_UR_DETECTED = 1 << 3
    DEV_STA_TRANSACTIONS_PENDING = 1 << 5

    # Link Capabilities (§7.5.3.6): Max Link Speed [3:0] (an index into the Supported Link
    # Speeds Vector of Link Capabilities 2: 1 = 2.5, 2 = 5.0, 3 = 8.0, 4 = 16.0 GT/s),
    # Maximum Link Width [9:4], ASPM Optionality Compliance [22].
    LINK_CAP_ASPM_OPTIONALITY = 1 << 22
    LINK_STA_SLOT_CLOCK = 1 << 12
    LINK_SPEEDS_GTS = {1: 2.5, 2: 5.0, 3: 8.0, 4: 16.0, 5: 32.0}
    LINK_WIDTHS = (1, 2, 4, 8, 12, 16, 32)


class PmCap:
    """PCI Power Management capability offsets (PCIe Base §7.5.2; PCI PM 1.2 §3.2)."""
    PMC = 0x02                  # Power Management Capabilities, bits 2:0 = version (011b: 1.2)
    PMCSR = 0x04                # Control/Status: PowerState [1:0], No_Soft_Reset [3]
    SIZE = 0x08

    PMC_VERSION = 0b011
    PMCSR_STATE_MASK = 0b11
    PMCSR_D0 = 0b00
    PMCSR_D3HOT = 0b11
    PMCSR_NO_SOFT_RESET = 1 << 3


class MsixCap:
    """MSI-X capability offsets (PCIe Base §7.7.2)."""
    CTRL = 0x02                 # Message Control: Table Size [10:0], Function Mask [14], Enable [15]
    TABLE = 0x04                # Table Offset [31:3] / Table BIR [2:0]
    PBA = 0x08                  # PBA Offset [31:3] / PBA BIR [2:0]
    SIZE = 0x0C

    CTRL_FUNCTION_MASK = 1 << 14
    CTRL_ENABLE = 1 << 15


MSIX_ENTRY_BYTES = 16
"""One MSI-X Table entry (§7.7.2): Message Address, Upper Address, Data, Vector Control."""

MSIX_MAX_VECTORS = 64
"""Largest MSI-X table this design builds: all pending bits fit one PBA QWORD (§7.7.2)."""


def MPS_BYTES(code: int) -> int:
    """Bytes for a 3-bit Max_Payload_Size / Max_Read_Request_Size encoding (§7.5.3.4)."""
    if not 0 <= code <= 5:
        raise ValueError(f"size encoding {code} is reserved (0..5 allowed, §7.5.3.4)")
    return 128 << code


MRRS_BYTES = MPS_BYTES

RCB_BYTES = (64, 128)           # Read Completion Boundary choices (§2.3.1.1)


# --- What the configuration space tells the rest of the function ---------------------------

FunctionControl = data.StructLayout({
    "requester_id": 16,         # {bus, device, function} captured from CfgWr0 (§2.2.6.2)
    "memory_space_en": 1,       # Command register bit 1
    "bus_master_en": 1,         # Command register bit 2
    "interrupt_disable": 1,     # Command register bit 10
    "max_payload_size": 3,      # Device Control bits 7:5 (encoding, 128 << n bytes)
    "max_read_request_size": 3, # Device Control bits 14:12 (encoding, 128 << n bytes)
    "ext_tag_en": 1,            # Device Control bit 8: 8-bit tags allowed
    "msix_enable": 1,           # MSI-X Message Control bit 15
    "msix_function_mask": 1,    # MSI-X Message Control bit 14
})
