"""Task graphs: dependencies between the tasks of an experiment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle of ``graph`` (node -> the nodes it depends on) as ``[a, b, ..., a]``, or None."""
    done: set[str] = set()
    for root in graph:
        if root in done:
            continue
        path, on_path, branches = [root], {root}, [iter(graph[root])]  # depth-first, no recursion
        while branches:
            node = next(branches[-1], None)
            if node is None:
                on_path.discard(path[-1])
                done.add(path.pop())
                branches.pop()
            elif node in on_path:
                return [*path[path.index(node) :], node]
            elif node not in done:
                path.append(node)
                on_path.add(node)
                branches.append(iter(graph.get(node, ())))
    return None
