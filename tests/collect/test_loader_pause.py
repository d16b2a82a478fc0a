"""The loader's pause between loads: short under light traffic and while a stall's backlog is cleared, longer
under heavy traffic (so collection keeps most of the core), a backing-off one after a failure."""

from __future__ import annotations

from opencdp.collect.ingest import HEAVY_LOAD_LINES, HEAVY_LOAD_RATE, MAX_LOAD_PAUSE_SECONDS, next_pause

INTERVAL = 0.2


def test_light_traffic_pauses_for_the_interval() -> None:
    assert next_pause(600, 0.35, 0.55, INTERVAL) == INTERVAL
    assert next_pause(0, 0.01, 0.21, INTERVAL) == INTERVAL


def test_heavy_traffic_pauses_twice_the_load_up_to_a_second() -> None:
    lines = 2 * HEAVY_LOAD_LINES
    assert next_pause(lines, 0.3, lines / (2 * HEAVY_LOAD_RATE), INTERVAL) == 0.6
    assert next_pause(lines, 0.8, lines / (2 * HEAVY_LOAD_RATE), INTERVAL) == MAX_LOAD_PAUSE_SECONDS
    assert next_pause(lines, 0.05, lines / (2 * HEAVY_LOAD_RATE), INTERVAL) == INTERVAL


def test_a_backlog_that_came_in_slowly_is_cleared_without_heavy_pauses() -> None:
    # 9,500 lines that a 10 s stall left at 950 lines/s: light traffic, however long the load took
    assert next_pause(9_500, 2.8, 10.0, INTERVAL) == INTERVAL
    # the same load, had the lines come in within a second: heavy
    assert next_pause(9_500, 2.8, 1.0, INTERVAL) == MAX_LOAD_PAUSE_SECONDS


def test_a_failed_load_backs_off() -> None:
    assert next_pause(None, 0.4, 0.6, INTERVAL) == 0.8
