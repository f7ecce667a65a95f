"""Scoreboards: golden models wrapped with the cycle-level port contract of a block."""
