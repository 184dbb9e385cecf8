"""Notices that travel with a result: what the minimum group size may have withheld from it.

The issuer is told *that* a threshold applies to the result it sees, never how many groups it
withheld, nor even whether it withheld any (README, security model): the count or a flag would tell
an issuer who narrows a query to one person (`WHERE c.id = 123 GROUP BY c.region`) whether that
person is in the other party's data, which an empty result alone does not. So a notice depends only
on the plan and on what the issuer already holds (the result's row count), and needs nothing from
where the threshold is applied.
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp


def threshold_notice(plan, table: pa.Table | None) -> str | None:
    """The notice for a result of `plan` (a `QueryPlan`): an ungrouped aggregate that came back empty
    was withheld; a grouped result may miss groups below the threshold. None without a threshold."""
    k = plan.physical.min_group_size if plan is not None else 0
    if not k or table is None:
        return None
    counted = plan.physical.counted
    unit = f"distinct rows of {', '.join(counted)}" if counted else "rows"
    tree = plan.qualified
    grouped = not isinstance(tree, exp.Select) or bool(tree.args.get("group")) or bool(tree.args.get("distinct"))
    if not grouped:
        if table.num_rows:
            return None
        having = " or HAVING rejected it" if tree.args.get("having") else ""
        return (f"no row: the aggregate covers fewer than {k} {unit} (min_group_size {k}){having}, "
                "so it was withheld")
    return (f"groups covering fewer than {k} {unit} are withheld (min_group_size {k}); "
            "whether any were is not revealed")


def result_notices(plan, table: pa.Table | None) -> tuple[str, ...]:
    """Every notice for a result, in the order a user should read them."""
    notice = threshold_notice(plan, table)
    return (notice,) if notice else ()
