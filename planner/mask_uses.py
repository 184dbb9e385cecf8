"""Where a column masked for the issuer may appear in its query: only on its way to the result as is.

A mask binds the column, not just the output it names: every other use would compute with the unmasked
value and tell the issuer about it. `WHERE o.category = 'books'` (or `< 'm'`, a binary search) names each
row's value, a join with the issuer's own column copies it, GROUP BY / DISTINCT / a merging UNION count
its distinct values, ORDER BY (also of the output, by name or position) and windows sort by it, a function
computes from it. So each reference must be an output of its SELECT as is, that SELECT keeping every row
it reads apart, in the result or a derived table or CTE whose reference is again one (tests/test_attacks_s14.py).
A `hash` mask (HMAC) keeps equality, so its column may also be a group key and the output of a DISTINCT or
a merging UNION: the hashed groups are the unmasked ones, each named by its hash. Refused with
`PolicyViolation` naming the column and the clause, on every path (spine, gather, translation).
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, ScopeType, build_scope

from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.reveal import column_sources, item_sources
from sqlsecure.policy.grants import ColumnRef

KEEPS_EQUALITY = ("hash",)  # masks whose values are equal exactly where the column's are


def refuse_masked_uses(tree: exp.Expression, masks: dict, issuer: str) -> None:
    """PolicyViolation for any use of a column masked for `issuer` other than passing it to the result."""
    relevant = {ref: mask for (ref, party), mask in masks.items() if party == issuer}
    if not relevant or not isinstance(tree, exp.Query):
        return
    for scope in build_scope(tree).traverse():
        for column in scope.columns:
            for ref, _ in column_sources(scope, column):
                merges = relevant[ref].method in KEEPS_EQUALITY if ref in relevant else False
                if ref in relevant and not passed_as_is(column, scope, merges):
                    _refuse(ref, issuer, clause_of(column, scope))
        for ref in ordered_outputs(scope, set(relevant)):
            _refuse(ref, issuer, "ORDER BY")


def _refuse(ref: ColumnRef, issuer: str, clause: str):
    raise PolicyViolation(f"{ref} is masked for {issuer}: it may only be revealed as is, not used in {clause} "
                          "(that would compute with its unmasked values); ask its owner to lift the mask, or "
                          "leave the column out")


def passed_as_is(column: exp.Column, scope: Scope, merges: bool = False) -> bool:
    """Whether `column` is an output of its SELECT as is, in the result or a derived table or CTE, that
    SELECT keeping every row it reads apart (no GROUP BY or DISTINCT, no UNION / INTERSECT / EXCEPT merging
    its rows); with `merges`, rows may merge and the column may be a GROUP BY key too."""
    select = scope.expression
    item = column.parent if isinstance(column.parent, exp.Alias) else column
    if merges and isinstance(column.parent, exp.Group) and column.parent.parent is select:
        return _reaches_result(scope)
    if not isinstance(select, exp.Select) or item.parent is not select or item.arg_key != "expressions":
        return False
    if not merges and (select.args.get("distinct") or select.args.get("group")):
        return False
    node = select
    while isinstance(node.parent, (exp.SetOperation, exp.Subquery)) and not isinstance(node.parent.parent, (
            exp.From, exp.Join)):
        node = node.parent
        if not merges and (isinstance(node, (exp.Intersect, exp.Except)) or (
                isinstance(node, exp.Union) and node.args.get("distinct"))):
            return False
    return _reaches_result(scope)


def _reaches_result(scope: Scope) -> bool:
    """Whether a scope's outputs are the result's, a derived table's or a CTE's (whose readers are checked
    in turn), not an expression subquery's (IN, a scalar, EXISTS), which compares or computes with them."""
    while scope.scope_type == ScopeType.SET_OPERATION and scope.parent is not None:
        scope = scope.parent
    return scope.scope_type in (ScopeType.ROOT, ScopeType.DERIVED_TABLE, ScopeType.CTE)


def clause_of(column: exp.Column, scope: Scope) -> str:
    """The clause a column is used in, for messages."""
    for node, clause in ((exp.Where, "WHERE"), (exp.Join, "a JOIN"), (exp.Group, "GROUP BY"), (exp.Order, "ORDER BY"),
                         (exp.Window, "a window"), (exp.Having, "HAVING"), (exp.Qualify, "QUALIFY")):
        if column.find_ancestor(node) is not None:
            return clause
    if not _reaches_result(scope):
        return "a subquery in an expression"
    if scope.expression.args.get("distinct") or isinstance(scope.expression, exp.Select) and \
            scope.expression.args.get("group"):
        return "a DISTINCT or grouped SELECT"
    if scope.expression.find_ancestor(exp.SetOperation) is not None:
        return "a UNION, INTERSECT or EXCEPT, which merges equal rows"
    return f"{column.parent.sql(dialect='duckdb')[:80]}"


def ordered_outputs(scope: Scope, refs: set) -> list[ColumnRef]:
    """The masked columns among the outputs a query orders by (by name or position): ordering masked
    values is not ordering the values."""
    if not isinstance(scope.expression, exp.Query):
        return []
    order = scope.expression.args.get("order")
    names = scope.expression.named_selects
    found = []
    for key in order.expressions if order else []:
        key = key.this
        if isinstance(key, exp.Column) and not key.table and key.name in names:
            i = names.index(key.name)
        elif isinstance(key, exp.Literal) and key.is_int and 0 < int(key.name) <= len(names):
            i = int(key.name) - 1
        else:
            continue
        found += [ref for ref, _ in item_sources(scope, i) if ref in refs]
    return found
