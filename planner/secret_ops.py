"""One small function per operator, each emitting its node of the secret program
(/work/notes/program_spec.md; executed by `executors/spu/program.py`).

`provenance` lists the protected owners' provenance columns a node carries beside its data columns, so
the group threshold of the aggregate that reaches the issuer can count each owner's distinct rows.
"""

from __future__ import annotations

from sqlsecure.planner.tree import quoted

NULL_PROVENANCE = "NULL"  # a bare NULL is an int on the SPU


def input_node(index: int) -> dict:
    return {"op": "input", "index": index}


def filter_node(child: dict, condition: str, owner: str | None = None, padded: str | None = None) -> dict:
    """A filter; `owner`: the party that computed `condition`, a flag column, on its own rows; `padded`: the
    bound B that party padded its aggregate to, `condition` being each row's validity (both for EXPLAIN)."""
    node = {"op": "filter", "child": child, "condition": condition}
    if owner is not None:
        node["owner"] = owner
    if padded is not None:
        node["padded"] = padded
    return node


def project_node(child: dict, items, provenance=()) -> dict:
    """The items, then the provenance columns passed through unchanged."""
    columns = [[name, sql] for name, sql in items] + [[p, quoted(p)] for p in provenance]
    return {"op": "project", "child": child, "columns": columns}


def union_node(children: list[dict], names_per_child: list[list[str]], provenance_per_child: list[list[str]],
               names: list[str]) -> dict:
    """UNION ALL: every branch yields the first branch's names and every branch's provenance column
    (NULL in the others' rows: a row counts only for its own owner)."""
    every = [p for ps in provenance_per_child for p in ps]
    aligned = []
    for child, own_names, own in zip(children, names_per_child, provenance_per_child):
        items = [[n, quoted(c)] for n, c in zip(names, own_names)]
        items += [[p, quoted(p) if p in own else NULL_PROVENANCE] for p in every]
        aligned.append({"op": "project", "child": child, "columns": items})
    return {"op": "union_all", "children": aligned}


def set_node(kind: str, keep_all: bool, left: dict, right: dict, right_columns, left_provenance,
             right_provenance) -> dict:
    """INTERSECT / EXCEPT [ALL]: whole data rows compared; the kept left row carries its provenance (the
    right side only decides which left rows stay, as in a semi-join)."""
    if right_provenance:
        right = project_node(right, [(c, quoted(c)) for c in right_columns])
    return {"op": "set", "kind": kind, "all": keep_all, "children": [left, right], "carry": list(left_provenance)}


def join_node(kind: str, left: dict, right: dict, left_keys, right_keys, condition, null_aware: bool,
              unique: str | None = None, declared: str | None = None) -> dict:
    """A join; `unique` ("left" | "right"): that side's keys are unique, so the SPU joins by a sort
    (n + m rows) instead of all pairs (n * m); `declared`: the party's declared key it rests on, which
    the SPU checks (one opened bit)."""
    node = {"op": "join", "kind": kind, "left": left, "right": right, "left_keys": list(left_keys),
            "right_keys": list(right_keys), "condition": condition}
    if null_aware:
        node["null_aware"] = True
    if unique is not None:
        node["unique"] = unique
    if declared is not None:
        node["declared"] = declared
    return node


def aggregate_node(child: dict, keys, aggregates, provenance, threshold: int | None, once=()) -> dict:
    """GROUP BY. Thresholded (the aggregate reaches the issuer): a group is kept only with >= k distinct
    rows of each provenance column; `once`: those of them whose every value is on one row at most (no
    join beneath repeats a row), so their distinct rows are counted as a sum, without a sort. Otherwise
    MIN(provenance) per group becomes the group row's provenance, so an outer aggregate never counts one
    base row twice."""
    calls = [[name, func, arg, distinct] for name, func, arg, distinct in aggregates]
    limit = None
    if threshold is not None:
        limit = {"k": threshold, "provenance": list(provenance)}
        if once:
            limit["once"] = list(once)
    else:
        calls += [[p, "MIN", quoted(p), False] for p in provenance]
    return {"op": "aggregate", "child": child, "keys": [[n, sql] for n, sql in keys], "aggregates": calls,
            "threshold": limit}


def distinct_node(child: dict, columns, provenance) -> dict:
    """DISTINCT; with provenance, a grouping on every data column keeping MIN(provenance)."""
    if not provenance:
        return {"op": "distinct", "child": child}
    return aggregate_node(child, [(c, quoted(c)) for c in columns], (), provenance, None)


def window_node(child: dict, name: str, func: str, arg, partition, order, frame: str | None = None) -> dict:
    """A window; `frame` only when it is not SQL's default ("rows" or "partition")."""
    node = {"op": "window", "child": child, "name": name, "func": func, "arg": arg, "partition": list(partition),
            "order": [[sql, desc, nulls_first] for sql, desc, nulls_first in order]}
    if frame is not None:
        node["frame"] = frame
    return node


def sort_node(child: dict, keys, limit: int | None, offset: int) -> dict:
    return {"op": "sort", "child": child, "keys": [[sql, desc, nulls_first] for sql, desc, nulls_first in keys],
            "limit": limit, "offset": offset}
