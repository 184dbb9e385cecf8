"""UNION, INTERSECT and EXCEPT (set semantics) of parties' SELECTs as one SELECT DISTINCT over their
UNION ALL (a UNION ALL at the top as a SELECT over it), so the enclave's union stage runs them
(`placement._place_union_in_enclave`).

`A UNION B` is `SELECT DISTINCT * FROM (A UNION ALL B)`; `A INTERSECT B` keeps a distinct row when some
branch of A and some branch of B hold it, `A EXCEPT B` when only branches of A do: with A's branches
first, that is MIN / MAX of the rows' branch numbers against the number of A's branches (`split`), which
the enclave computes per distinct row and never reveals. Set operations compare NULLs as equal, as GROUP
BY does. Only plain branches are rewritten (one party's SELECT each, no aggregate or window: no group
threshold applies to the rows, as to the query written); ALL variants of INTERSECT / EXCEPT, BY NAME,
and ORDER BY / LIMIT on the set operation keep their shape (and the placement's refusal)."""

from __future__ import annotations

from sqlglot import exp

UNION_ALIAS = "__set"
SET_CLAUSES = ("order", "limit", "offset", "by_name", "with")


def as_union_all(tree: exp.Expression) -> tuple[exp.Select, tuple[str, int] | None] | None:
    """(the SELECT DISTINCT over the UNION ALL of every branch, None for UNION or (INTERSECT / EXCEPT, the
    number of the left side's branches)) for a top-level set operation of plain branches; else None."""
    if not isinstance(tree, exp.SetOperation) or _clauses(tree):
        return None
    distinct = bool(tree.args.get("distinct"))
    if isinstance(tree, exp.Union):  # UNION ALL at the top: every union under it ALL too (rows, not a set)
        sides, operation = [_union_leaves(tree, keep_all=not distinct)], None
    elif not distinct:
        return None
    else:
        sides, operation = [_union_leaves(tree.this), _union_leaves(tree.expression)], type(tree).__name__.lower()
    leaves = [leaf for side in sides if side is not None for leaf in side]
    if any(side is None for side in sides) or not all(_plain(leaf) for leaf in leaves):
        return None
    names = leaves[0].named_selects
    if len(set(names)) != len(names) or any(len(leaf.expressions) != len(names) for leaf in leaves):
        return None
    union = None
    for leaf in leaves:
        leaf = leaf.copy()
        leaf.set("expressions", [exp.alias_(e.unalias(), name, quoted=True) for e, name in zip(leaf.expressions, names)])
        union = leaf if union is None else exp.union(union, leaf, distinct=False)
    outer = exp.select(*(exp.alias_(exp.column(n, UNION_ALIAS, quoted=True), n, quoted=True) for n in names)).from_(
        exp.Subquery(this=union, alias=exp.TableAlias(this=exp.to_identifier(UNION_ALIAS))))
    return outer.distinct() if distinct else outer, None if operation is None else (operation, len(sides[0]))


def _clauses(node: exp.Expression) -> bool:
    return any(node.args.get(clause) for clause in SET_CLAUSES)


def _union_leaves(node: exp.Expression, keep_all: bool = False) -> list[exp.Select] | None:
    """The SELECTs of a chain of UNION [ALL] (set semantics above make their duplicates irrelevant; with
    `keep_all`, under a UNION ALL, only UNION ALL chains)."""
    if isinstance(node, exp.Subquery) and not node.alias:
        return _union_leaves(node.this, keep_all)
    if isinstance(node, exp.Union) and not _clauses(node) and not (keep_all and node.args.get("distinct")):
        left, right = _union_leaves(node.this, keep_all), _union_leaves(node.expression, keep_all)
        return None if left is None or right is None else left + right
    return [node] if isinstance(node, exp.Select) else None


def _plain(select: exp.Select) -> bool:
    """One party's SELECT without aggregate or window (the rows themselves, no threshold to apply)."""
    parties = {t.db for t in select.find_all(exp.Table) if t.db}
    return len(parties) == 1 and select.find(exp.AggFunc, exp.Window) is None and not select.args.get("group")
