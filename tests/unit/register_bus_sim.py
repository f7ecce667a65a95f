"""Register bus master for Amaranth-simulator testbenches (``hdl/pcie/register_bus.py``)."""
__all__ = ["bus_read", "bus_write", "write_field", "read_field"]


async def _access(ctx, bus, addr: int, write: bool, data: int, be: int, max_wait: int):
    ctx.set(bus.valid, 1)
    ctx.set(bus.addr, addr)
    ctx.set(bus.write, int(write))
    ctx.set(bus.be, be)
    ctx.set(bus.w_data, data)
    for _ in range(max_wait):
        _, _, ack, r_data = await ctx.tick().sample(bus.ack, bus.r_data)
        if ack:
            ctx.set(bus.valid, 0)
            return r_data
    raise AssertionError(f"register access at DW {addr} not acknowledged in {max_wait} cycles")


async def bus_read(ctx, bus, addr: int, be: int = 0xF, max_wait: int = 64) -> int:
    """Read DW ``addr``; returns the DW (all four bytes, whatever ``be`` says)."""
    return await _access(ctx, bus, addr, False, 0, be, max_wait)


async def bus_write(ctx, bus, addr: int, data: int, be: int = 0xF, max_wait: int = 64) -> None:
    """Write DW ``addr`` with byte enables ``be``."""
    await _access(ctx, bus, addr, True, data, be, max_wait)


async def write_field(ctx, bus, offset: int, width: int, value: int, **kw) -> None:
    """Write a ``width``-byte field at byte ``offset`` with its natural access (§4.1.3.1):
    one access with the field's byte enables (8-byte fields as two 32-bit halves)."""
    if width == 8:
        await write_field(ctx, bus, offset, 4, value & 0xFFFF_FFFF, **kw)
        await write_field(ctx, bus, offset + 4, 4, value >> 32, **kw)
        return
    lane = offset & 3
    be = ((1 << width) - 1) << lane
    await bus_write(ctx, bus, offset >> 2, (value << (8 * lane)) & 0xFFFF_FFFF, be, **kw)


async def read_field(ctx, bus, offset: int, width: int, **kw) -> int:
    """Read a ``width``-byte field at byte ``offset`` with its natural access."""
    if width == 8:
        low = await read_field(ctx, bus, offset, 4, **kw)
        return low | await read_field(ctx, bus, offset + 4, 4, **kw) << 32
    lane = offset & 3
    dw = await bus_read(ctx, bus, offset >> 2, ((1 << width) - 1) << lane, **kw)
    return (dw >> (8 * lane)) & ((1 << (8 * width)) - 1)
