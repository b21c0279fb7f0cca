"""The HTTP benchmark's round-robin: the server that goes first moves on every round."""

from __future__ import annotations

from benchmarks.httpbench import Run, Settings, _rotated


def test_rotated_starts_at_the_shift_modulo_the_length() -> None:
    assert _rotated(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert _rotated([], 3) == []


def test_every_server_goes_first_equally_across_cells_and_rounds(
    quick_settings: Settings,
) -> None:
    run = Run(quick_settings)
    servers = ["ceiling", "off", "adaptive"]
    firsts = []
    for _cell in range(3):  # cells of two rounds each, as the closed loop runs them
        for _round in range(2):
            order = run.order(servers)
            assert sorted(order) == sorted(servers)
            firsts.append(order[0])
    assert firsts == ["ceiling", "off", "adaptive", "ceiling", "off", "adaptive"]
    # Each cell's first round starts with a different server.
    assert len({firsts[0], firsts[2], firsts[4]}) == 3
