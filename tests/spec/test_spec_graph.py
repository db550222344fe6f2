"""graph.py: stable topological order and every cycle."""

from __future__ import annotations

import graphlib

import pytest

from airflow_mlpipe.spec.graph import find_cycles, topological_order


def test_ties_follow_the_written_order():
    names = ["d", "c", "b", "a"]
    assert topological_order(names, {}) == names
    assert topological_order(names, {"d": ["a"]}) == ["c", "b", "a", "d"]


def test_cycle_raises_in_order():
    with pytest.raises(graphlib.CycleError):
        topological_order(["a", "b"], {"a": ["b"], "b": ["a"]})


def test_every_disjoint_cycle_is_found():
    upstream = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["e"], "e": ["d"], "f": ["a"]}
    assert find_cycles(list("abcdef"), upstream) == [["a", "b", "c", "a"], ["d", "e", "d"]]


def test_no_cycle():
    assert find_cycles(["a", "b"], {"b": ["a"]}) == []
