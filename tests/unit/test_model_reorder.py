"""Tests of the golden model sim/model/reorder.py on its own."""
import os
import random

import pytest

from sim.model.reorder import CompletionError, CreditError, ReorderModel, Retired


def test_in_order_completions_retire_immediately():
    m = ReorderModel(8)
    seqs = [m.alloc() for _ in range(3)]
    assert seqs == [0, 1, 2]
    for s in seqs:
        assert m.complete(s, f"p{s}")
        assert m.retire() == Retired(s, f"p{s}", True)
    assert m.in_flight == 0


def test_early_completions_are_stashed_until_the_expected_one():
    m = ReorderModel(8)
    for _ in range(4):
        m.alloc()
    assert m.complete(2, "c") and m.complete(1, "b") and m.complete(3, "d")
    assert not m.ready() and m.retire() is None
    assert m.complete(0, "a")
    assert m.drain() == [Retired(0, "a", False), Retired(1, "b", False),
                         Retired(2, "c", False), Retired(3, "d", True)]
    assert m.in_flight == 0


def test_credit_limit_and_return():
    m = ReorderModel(4)
    for _ in range(4):
        m.alloc()
    assert not m.can_alloc()
    with pytest.raises(CreditError):
        m.alloc()
    m.complete(1, 1)
    assert not m.can_alloc(), "a stashed element still holds its credit"
    m.complete(0, 0)
    m.retire()
    assert m.can_alloc() and m.alloc() == 4


def test_sequence_numbers_wrap_modulo_twice_depth():
    m = ReorderModel(2)
    assert m.seq_width == 2 and m.seq_modulus == 4
    got = []
    for _ in range(5):
        a, b = m.alloc(), m.alloc()
        m.complete(b, b)
        m.complete(a, a)
        got += [r.seq for r in m.drain()]
    assert got == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_duplicate_completion_is_refused_and_first_payload_kept():
    m = ReorderModel(8)
    m.alloc(), m.alloc()
    assert m.complete(1, "first")
    assert not m.complete(1, "second")
    assert m.error_seq == 1 and m.error_kind is CompletionError.DUPLICATE
    m.complete(0, "zero")
    assert [(r.seq, r.payload) for r in m.drain()] == [(0, "zero"), (1, "first")]


def test_unknown_and_retired_completions_are_not_in_flight():
    m = ReorderModel(8)
    m.alloc()
    assert not m.complete(5, "x")
    assert m.error_seq == 5 and m.error_kind is CompletionError.NOT_IN_FLIGHT
    m.complete(0, "a")
    m.retire()
    assert not m.complete(0, "again")
    assert m.error_seq == 5, "the first error sticks"
    assert m.retire() is None


def test_flush_restarts_numbering_and_clears_error():
    m = ReorderModel(4)
    for _ in range(3):
        m.alloc()
    m.complete(1, 1)
    m.complete(7, 7)
    m.flush()
    assert m.in_flight == 0 and m.error_seq is None and m.next_seq == 0
    assert m.retire() is None
    assert m.alloc() == 0


def test_run_markers_respect_max_run():
    m = ReorderModel(16, max_run=3)
    for _ in range(7):
        m.alloc()
    for s in range(7):
        m.complete(s, s)
    assert [r.last for r in m.drain()] == [False, False, True, False, False, True, True]


def test_run_marker_only_counts_ready_elements():
    m = ReorderModel(8)
    for _ in range(3):
        m.alloc()
    m.complete(0, 0)
    m.complete(2, 2)
    assert m.retire() == Retired(0, 0, True)     # 1 is missing
    m.complete(1, 1)
    assert m.drain() == [Retired(1, 1, False), Retired(2, 2, True)]


def test_bypass_retires_in_arrival_order():
    m = ReorderModel(8, bypass=True)
    for _ in range(4):
        m.alloc()
    for s in (2, 0, 3, 1):
        m.complete(s, s * 10)
    out = m.drain()
    assert [r.seq for r in out] == [2, 0, 3, 1]
    assert [r.last for r in out] == [False, False, False, True]
    assert not m.complete(2, 0) and m.error_kind is CompletionError.NOT_IN_FLIGHT


def test_bypass_credit_waits_for_the_oldest_seq():
    m = ReorderModel(4, bypass=True)
    for _ in range(4):
        m.alloc()
    for s in (1, 2, 3):
        m.complete(s, s)
    m.drain()
    assert m.in_flight == 1
    assert not m.can_alloc(), "seq 4 would reuse seq 0's slot while 0 is outstanding"
    m.complete(0, 0)
    assert m.can_alloc()


def test_bad_parameters():
    for depth in (0, 1, 3, 6, 8192):
        with pytest.raises(ValueError, match="power of two"):
            ReorderModel(depth)
    with pytest.raises(TypeError):
        ReorderModel(4.0)
    with pytest.raises(ValueError, match="max_run"):
        ReorderModel(4, max_run=0)


def test_random_against_sorted_reference():
    """Whatever the completion order, everything retires exactly once, in seq order."""
    seed = int(os.environ["SEED"]) if os.environ.get("SEED") else random.randrange(2**31)
    print(f"SEED={seed}")
    rng = random.Random(seed)
    m = ReorderModel(16, max_run=5)
    outstanding, retired, allocated = [], [], []
    for _ in range(5000):
        if m.can_alloc() and rng.random() < 0.6:
            s = m.alloc()
            outstanding.append(s)
            allocated.append(s)
        if outstanding and rng.random() < 0.5:
            s = outstanding.pop(rng.randrange(len(outstanding)))
            assert m.complete(s, ("payload", s))
        out = m.drain()
        run = 0
        for r in out:
            assert r.payload == ("payload", r.seq)
            run = 0 if r.last else run + 1
            assert run < 5
        retired += [r.seq for r in out]
    assert retired == allocated[:len(retired)]
    assert m.error_seq is None
