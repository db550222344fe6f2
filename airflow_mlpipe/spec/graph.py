"""The step graph: stable topological order and cycle detection (graphlib)."""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Mapping, Sequence


def _sorter(names: Sequence[str], upstream: Mapping[str, Sequence[str]]) -> graphlib.TopologicalSorter:
    known = set(names)
    ts: graphlib.TopologicalSorter = graphlib.TopologicalSorter()
    for name in names:
        ts.add(name, *(d for d in upstream.get(name, ()) if d in known))
    return ts


def topological_order(names: Sequence[str], upstream: Mapping[str, Sequence[str]]) -> list[str]:
    """``names`` ordered so every step comes after its upstream steps; among the steps that are
    ready at the same time the one written first goes first. Raises ``graphlib.CycleError``."""
    index = {name: i for i, name in enumerate(names)}
    ts = _sorter(names, upstream)
    ts.prepare()
    heap: list[tuple[int, str]] = []
    order: list[str] = []
    while ts.is_active():
        for name in ts.get_ready():
            heapq.heappush(heap, (index[name], name))
        _, name = heapq.heappop(heap)
        order.append(name)
        ts.done(name)
    return order


def find_cycles(names: Sequence[str], upstream: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Every cycle graphlib finds, one per strongly tangled group: each as ``[a, b, ..., a]`` in
    dependency direction (``a`` needs ``b`` ... needs ``a``), starting with the first-written step."""
    index = {name: i for i, name in enumerate(names)}
    remaining = list(names)
    graph = {n: [d for d in upstream.get(n, ()) if d in index] for n in names}
    cycles: list[list[str]] = []
    while remaining:
        try:
            _sorter(remaining, graph).prepare()
            break
        except graphlib.CycleError as exc:
            cycle = list(exc.args[1])[:-1]  # graphlib repeats the first node at the end
            start = min(range(len(cycle)), key=lambda i: index[cycle[i]])
            cycle = cycle[start:] + cycle[:start]  # start at the first-written step
            if len(cycle) > 1 and cycle[1] not in graph[cycle[0]]:  # graphlib lists predecessors first
                cycle = [cycle[0], *reversed(cycle[1:])]
            cycles.append([*cycle, cycle[0]])
            drop = set(cycle)
            remaining = [n for n in remaining if n not in drop]
            graph = {n: [d for d in deps if d not in drop] for n, deps in graph.items() if n not in drop}
    return cycles
