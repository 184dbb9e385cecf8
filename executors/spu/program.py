"""The secret-program interpreter: an operator tree over secret relations, run by the SPU compute
parties in lockstep (issue 16). The JSON (`parse_program`) is the interface with the planner's
`SecretQuery` step: {"inputs": [{"columns": [[name, kind], ...], "classes": [[name, M], ...]}, ...],
"root": NODE} ("classes": the owners' published magnitude classes, optional), one NODE per
operator of `secret_relation` and `set_ops` (input, filter, project, union_all, join, aggregate,
distinct, window, sort, set), expressions as DuckDB SQL over the child's quoted column names.

  parse_program(text)      canonical JSON -> `Program`: every node validated (its op, fields, column
                           names, the kinds of its expressions, what SPU_RULES evaluates); a bad node
                           is a ProtocolError (a refused expression a NotSupportedError) naming its path.
  run_program(s, ...)      every compute party: tell the others which inputs it holds and their row
                           counts (1 round, public sizes), check its values against the program's
                           limits (`input_limits`, with the inputs' classes: DataError naming the
                           column, before any share is made; the planner proved the same limits
                           with the published sizes, planner/magnitudes.py), share them, run the
                           operators (`secret_relation`), open the root's valid rows to the
                           issuer only (shuffled first unless the root is a sort; invalid rows are
                           zeroed before the opening, so the issuer learns the result rows and the
                           public size, nothing else). With a "noise" field
                           (differential privacy, `_noise_spec`), one compute party first adds
                           OpenDP noise to its shares of the noised columns (`add_noise`).
  receive_program_output   the issuer when it is not a compute party: adds up the parties' shares.
  output_schema(program)   the result's Arrow schema, from the kinds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from sqlsecure.errors import DataError, NotSupportedError, ProgrammingError, ProtocolError
from sqlsecure.policy import privacy
from sqlsecure.executors.spu import approximation, arith, fixed_keys, relational
from sqlsecure.executors.spu import secret_relation as sr
from sqlsecure.executors.spu import set_ops
from sqlsecure.executors.spu.ranges import EXTREMES, ROUNDING, RangePlan, choices
from sqlsecure.executors.spu.secret_relation import SecretRelation
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.executors.spu.shares import ArithShare, as_ring, encode_fixed
from sqlsecure.executors.spu.stage import (INTEGER_CASTS, SV, _at_least, nulls_zeroed, spu_refusal, static_kind,
                                          without_zero_checks)
from sqlsecure.executors.spu.values import (TEXT_CLASSES, decimal_scale, decimal_scales, decode_column, encode, kind_of,
                                           limb_fracs, limbs_of, range_kind, shared_kind, union_decimal_scale,
                                           value_kind)
from sqlsecure.planner.tree import many_side_only

KINDS = ("int", "fixed", "bool", "date", "timestamp", "text")
JOIN_KINDS = ("inner", "left", "full", "semi", "anti", "cross")
AGGREGATES = ("COUNT", "SUM", "AVG", "MIN", "MAX")
DISTINCT_AGGREGATES = ("COUNT", "SUM", "AVG")  # of distinct values: one sort by (group, value) each
PROVENANCE = "__prov_"  # an input's row numbers 0..n-1, which its owner appends (runtime.party, planner.magnitudes)
AVG_MAX_ROWS = 2 ** 32  # `compare.divide`'s divisor range (y_bits = 32), the AVG's count


@dataclass
class Node:
    """One validated operator: its op, parsed arguments, children and output columns [(name, kind)]."""

    op: str
    path: str
    args: dict
    children: list["Node"]
    schema: list[tuple[str, str]] = field(default_factory=list)

    def kinds(self) -> dict[str, str]:
        return dict(self.schema)


@dataclass
class Program:
    inputs: list[list[tuple[str, str]]]
    root: Node
    text: str
    noise: dict | None = None  # differential privacy at the output step (`_noise_spec`)
    # The owners' published magnitude classes of input columns (`_input_name` -> M, every |value| < 2^M;
    # planner/magnitudes.py): they bound the columns in `range_plan`, and each owner checks its values
    # against them while encoding, so an accepted plan's classes hold at run time or the query is refused.
    classes: dict[str, int] = field(default_factory=dict)

    @property
    def outputs(self) -> list[tuple[str, str]]:
        """The columns opened to the issuer: the root's, but those the noise only thresholds on."""
        hidden = set(self.noise["hidden"]) if self.noise else set()
        return [(name, kind) for name, kind in self.root.schema if name not in hidden]


# -- parsing and validation --------------------------------------------------------------------------

def parse_program(text: str) -> Program:
    """Validate a secret program (see the module docstring); ProtocolError naming the bad node."""
    try:
        obj = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"secret program: not JSON ({exc})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("inputs"), list) or "root" not in obj:
        raise ProtocolError("secret program: needs {'inputs': [...], 'root': {...}}")
    inputs = [_input_columns(i, spec) for i, spec in enumerate(obj["inputs"])]
    classes = {name: bits for i, spec in enumerate(obj["inputs"]) for name, bits in _input_classes(i, spec, inputs[i])}
    root = _node(obj["root"], "root", inputs)
    approximate_columns(root)  # refuses a rounding whose error bound an earlier node holds
    approximate_columns(root, amplified=True)  # and a DOUBLE product's, whose error its factors magnify
    double_columns(root)  # refuses keys that are DOUBLEs, which fixed point would merge
    key_classes(root, classes)
    return Program(inputs, root, text, _noise_spec(obj.get("noise"), root), classes)


def approximate_columns(node: Node, amplified: bool = False) -> dict[str, exp.Expression]:
    """The columns of `node` whose values are approximations (spu.approximation: a quotient by a secret,
    SQRT, ...), each with the expression that made it, after refusing any ROUND / FLOOR / CEIL / CAST to
    an integer or DECIMAL of such a column: the error bound that guards a rounding is composed within one
    expression, and a column from an earlier node (a subquery's, an aggregate's, a window's) arrives
    without it. Comparisons of such a column are refused for the same reason, and so are keys that are
    approximate values (`_refuse_approximate_keys`). With `amplified`, the columns holding a product with a
    DOUBLE factor (`_amplified`: a SUM of them errs by its rows' summed bounds, which stay in the step that
    made it) count too, for the comparisons and roundings only."""
    subs = [approximate_columns(child, amplified) for child in node.children]
    below = {name: e for sub in subs for name, e in sub.items()}
    a = node.args
    if not amplified:
        _refuse_approximate_keys(node, subs)
    if node.op in ("union_all", "set"):  # by position (a set operation's output may add columns: none approximate)
        return {name: e for i, (name, _) in enumerate(node.schema) for child, sub in zip(node.children, subs)
                if i < len(child.schema) and (e := sub.get(child.schema[i][0])) is not None}
    named = [(name, e) for name, e, _ in a.get("columns", [])] if node.op == "project" else \
        [(name, e and exp.Anonymous(this=func, expressions=[e.copy()])) for name, func, e, _ in a.get("aggregates", [])] + \
        [(n, e) for n, e, _ in a.get("keys", [])] \
        if node.op == "aggregate" else \
        [(a["name"], a["arg"] and exp.Anonymous(this=a["func"].upper(), expressions=[a["arg"].copy()]))] \
        if node.op == "window" else []
    used = [e for _, e in named] + [a.get("condition")] + [*a.get("partition", [])] + \
        [e for e, _, _ in (a.get("keys", []) if node.op == "sort" else [])]
    for e in (x for x in used if isinstance(x, exp.Expression)):
        _refuse_rounding_of(e, below, node)
        _refuse_comparison_of(e, below, node)
    made = {name: below.get(e.name) if isinstance(e, exp.Column) and e.name in below else e
            for name, e in named if e is not None and not _is_count(e) and
            (approximation.is_approximate(e) or (amplified and _amplified(e, node)) or
             any(c.name in below for c in e.find_all(exp.Column)))}
    return made if node.op in ("project", "aggregate") else {**below, **made}


def _is_count(e: exp.Expression) -> bool:
    """An aggregate's or a window's COUNT: exact, whatever it counts."""
    return isinstance(e, exp.Anonymous) and e.name.upper() == "COUNT"


EXACT_TYPES = {"int": "BIGINT", "bool": "BOOLEAN", "date": "BIGINT", "timestamp": "BIGINT"}  # held exactly


def _amplified(e: exp.Expression, node: Node) -> bool:
    """Whether `e` holds a product with a factor that may be a DOUBLE's encoding
    (`approximation.amplified_encoding`), its columns typed by the kinds of `node`'s inputs: an integer,
    boolean or DECIMAL factor is exact, a fixed-point one may be an encoding."""
    kinds = {name: kind for child in node.children for name, kind in child.schema}
    if node.op == "aggregate" and isinstance(e, exp.Anonymous) and e.name.upper() == "SUM" and \
            static_kind(e.expressions[0], lambda c: kinds.get(c.name)) == "fixed":
        return True  # a SUM of DOUBLEs: its rows' encoding errors add up (`Stage.sums_doubles`; an AVG's do not)
    typed = e.copy()
    for column in typed.find_all(exp.Column):
        kind = kinds.get(column.name, "fixed")
        exact = EXACT_TYPES.get(kind, "DECIMAL" if decimal_scale(kind) is not None else None)
        if exact is not None:
            column.type = exp.DataType.build(exact)
    return approximation.amplified_encoding(typed)


ROUNDED_CASTS = (*INTEGER_CASTS, exp.DataType.Type.DECIMAL)  # casts that round a fixed-point value
COMPARED = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.In, exp.Nullif)


def _refuse_approximate_keys(node: Node, subs: list[dict[str, exp.Expression]]) -> None:
    """Refuse keys that are approximate values, computed in the key or in an earlier step
    (`approximation.refuse_approximate_keys`): GROUP BY, DISTINCT, INTERSECT / EXCEPT, join and
    PARTITION BY keys (equality), a window's ORDER BY and a sort's under LIMIT / OFFSET (order)."""
    a = node.args

    def refuse(keys, use, sub):  # named as the user wrote them (`written_columns`), not by internal names
        approximate = [k for k in keys if approximation.is_approximate(k) or any(c.name in sub for c in k.find_all(exp.Column))]
        approximation.refuse_approximate_keys([_as_written(k, _written_inputs(node)) for k in approximate[:1]], use,
                                              lambda k: True)
    below = {name: e for sub in subs for name, e in sub.items()}
    columns = [exp.column(name) for name, _ in node.children[0].schema] if node.children else []
    if node.op == "aggregate":
        refuse([e for _, e, _ in a["keys"]], "a GROUP BY key", below)
    elif node.op in ("distinct", "set"):
        refuse(columns, "a DISTINCT, INTERSECT or EXCEPT column", subs[0])
        if node.op == "set":
            refuse([exp.column(name) for name, _ in node.children[1].schema], "an INTERSECT or EXCEPT column", subs[1])
    elif node.op == "join":
        refuse(a["left_keys"], "a join key", subs[0])
        refuse(a["right_keys"], "a join key", subs[1])
    elif node.op == "window":
        refuse(a["partition"], "a PARTITION BY key", below)
        refuse([e for e, _, _ in a["order"]], "a window's ORDER BY key", below)
    elif node.op == "sort" and (a["limit"] is not None or a["offset"]):
        refuse([e for e, _, _ in a["keys"]], "an ORDER BY key under LIMIT or OFFSET", below)


def double_columns(node: Node) -> set[str]:
    """The columns of `node` that hold DOUBLEs in fixed point (`fixed_keys.double_part`: not a rounded or
    cast value), after refusing, naming the user's expression (`written_columns`), any such value used as
    a key that fixed point could merge: GROUP BY, DISTINCT, a DISTINCT aggregate's argument, INTERSECT /
    EXCEPT, join and PARTITION BY."""
    subs = [double_columns(child) for child in node.children]
    doubles = {name for sub in subs for name in sub}
    a = node.args

    def refuse(keys, use, inexact=doubles):
        fixed_keys.refuse_double_keys(keys, use, lambda c: c.name in inexact,
                                      shown=lambda e: _as_written(e, _written_inputs(node)))

    def inexact(e: exp.Expression) -> bool:
        return fixed_keys.double_part(e, lambda c: c.name in doubles) is not None
    if node.op == "input":
        return {name for name, kind in node.schema if kind == "fixed"}
    if node.op in ("union_all", "set"):  # by position: a DOUBLE where a branch holds one or a DECIMAL's code
        if node.op == "set":
            refuse([exp.column(name) for name, _ in node.children[0].schema if name not in a["carry"]],
                   "an INTERSECT or EXCEPT column", subs[0])
            refuse([exp.column(name) for name, _ in node.children[1].schema], "an INTERSECT or EXCEPT column",
                   subs[1])
        return {name for i, (name, kind) in enumerate(node.schema) if kind == "fixed" and any(
            i < len(c.schema) and (c.schema[i][0] in sub or decimal_scale(c.schema[i][1]) is not None)
            for c, sub in zip(node.children, subs))}
    if node.op == "project":
        return {name for name, e, _ in a["columns"] if inexact(e)}
    if node.op == "aggregate":
        refuse([e for _, e, _ in a["keys"]], "a GROUP BY key")
        refuse([arg for _, _, arg, distinct in a["aggregates"] if distinct], "a DISTINCT aggregate's argument")
        return {name for name, e, _ in a["keys"] if inexact(e)} | {
            name for name, func, arg, _ in a["aggregates"] if func == "AVG" or (func != "COUNT" and inexact(arg))}
    if node.op == "distinct":
        refuse([exp.column(name) for name, _ in node.children[0].schema], "a DISTINCT column")
    elif node.op == "join":
        refuse(a["left_keys"], "a join key", subs[0])
        refuse(a["right_keys"], "a join key", subs[1])
    elif node.op == "window":
        refuse(a["partition"], "a PARTITION BY key")
        if a["func"] in ("sum", "min", "max", "avg") and inexact(a["arg"]):
            doubles = doubles | {a["name"]}
    return doubles


def written_columns(node: Node) -> dict[str, exp.Expression]:
    """Each column of `node` as the user's expression it stands for, through the projections and
    aggregates that named it (`__a2` -> SUM(z)), for refusals that must name what the user wrote."""
    shown = _written_inputs(node)
    a = node.args
    if node.op in ("union_all", "set"):
        return {name: shown.get(name, exp.column(name)) for name, _ in node.children[0].schema}
    if node.op == "project":
        return {name: _as_written(e, shown) for name, e, _ in a["columns"]}
    if node.op == "aggregate":
        written = {name: _as_written(e, shown) for name, e, _ in a["keys"]}
        for name, func, arg, distinct in a["aggregates"]:
            argument = _as_written(arg, shown) if arg is not None else exp.Star()
            written[name] = exp.Anonymous(this=func, expressions=[
                exp.Distinct(expressions=[argument]) if distinct else argument])
        return written
    if node.op == "window" and a["arg"] is not None:
        return {**shown, a["name"]: exp.Anonymous(this=a["func"].upper(), expressions=[_as_written(a["arg"], shown)])}
    return shown


def _written_inputs(node: Node) -> dict[str, exp.Expression]:
    """`written_columns` of every child of `node`, merged."""
    return {name: e for child in node.children for name, e in written_columns(child).items()}


def _as_written(e: exp.Expression, shown: dict[str, exp.Expression]) -> exp.Expression:
    """`e` with each column replaced by the user's expression it stands for, columns unquoted."""
    return e.copy().transform(lambda x: shown[x.name].copy() if isinstance(x, exp.Column) and x.name in shown
                              else exp.column(x.name) if isinstance(x, exp.Column) else x)


def _named_as_written(column: str, shown: dict[str, exp.Expression]) -> str:
    """A column for a refusal: `t.s = SUM(a.x * b.y)` where the user named it, the expression alone where the
    planner did (`__a2`, `_col_0`)."""
    written = _as_written(exp.column(column), shown).sql(dialect="duckdb")
    internal = column.startswith("__") or column.startswith("_col")
    return written if internal or written == column else f"{column} = {written}"


def _refuse_comparison_of(e: exp.Expression, approximate: dict[str, exp.Expression], node: Node) -> None:
    """Refuse a comparison of a column that an earlier step computed as an approximate value: its error
    bound stayed behind in that step, so the run-time guard (`Stage._refuse_within_error`) has none."""
    for comparison in e.find_all(*COMPARED):
        column = next((c.name for c in comparison.find_all(exp.Column) if c.name in approximate), None)
        if column is not None:
            shown = _written_inputs(node)
            raise NotSupportedError(
                f"{_as_written(comparison, shown).sql(dialect='duckdb')}: the SPU bounds no error for "
                f"{_named_as_written(column, shown)}, an approximate value (or a "
                "product with a DOUBLE factor, which magnifies its encoding's error, or a SUM of DOUBLEs, whose "
                "rows' encoding errors add up) computed in an earlier step (a "
                "subquery, an aggregate or a window), so the comparison could take the other side "
                "than DuckDB's doubles unseen; compare a rounded value (ROUND(x / y, 2) in the step that computes "
                "it), compare in the expression that computes it, or compare at one party")


def _refuse_rounding_of(e: exp.Expression, approximate: dict[str, exp.Expression], node: Node) -> None:
    for rounding in e.find_all(*ROUNDING, exp.Cast):
        if isinstance(rounding, exp.Cast) and rounding.to.this not in ROUNDED_CASTS:
            continue
        column = next((c.name for c in rounding.this.find_all(exp.Column) if c.name in approximate), None)
        if column is not None:
            shown = _written_inputs(node)
            raise NotSupportedError(
                f"{_as_written(rounding, shown).sql(dialect='duckdb')}: the SPU bounds no error for "
                f"{_named_as_written(column, shown)}, an approximate value (or a "
                "product with a DOUBLE factor, which magnifies its encoding's error, or a SUM of DOUBLEs, whose "
                "rows' encoding errors add up) computed in an earlier step (a "
                "subquery, an aggregate or a window) that leaves its error bound behind, so a row "
                "near a rounding boundary could round the other way than DuckDB's unseen; round each term first "
                "(SUM(ROUND(x / y, 2))), round it in the expression that computes it, or round at one party")


NOISE_KINDS = ("int", "fixed")  # and decimal.<s>: the kinds a noise draw is added to


def _noise_spec(spec, root: Node) -> dict | None:
    """{"party": compute party that adds the noise, "mechanism": laplace | gaussian, "columns": [[name,
    scale], ...], "threshold": [count column, at least] | null, "hidden": [columns not opened]}."""
    if spec is None:
        return None
    kinds = root.kinds()
    columns, threshold, hidden = spec.get("columns"), spec.get("threshold"), spec.get("hidden", [])
    if not isinstance(spec.get("party"), str) or spec.get("mechanism") not in ("laplace", "gaussian") \
            or not isinstance(columns, list) or not isinstance(hidden, list) or not all(h in kinds for h in hidden):
        raise ProtocolError("secret program: noise: expected {'party': str, 'mechanism': 'laplace'|'gaussian', "
                            "'columns': [[name, scale], ...], 'threshold': [name, int] | null, 'hidden': [names]}")
    for item in columns:
        if not (isinstance(item, list) and len(item) == 2 and item[0] in kinds
                and isinstance(item[1], (int, float)) and not isinstance(item[1], bool) and item[1] > 0):
            raise ProtocolError(f"secret program: noise: a column is [a root column, scale > 0], got {item!r}")
        if kinds[item[0]] not in NOISE_KINDS and decimal_scale(kinds[item[0]]) is None:
            raise NotSupportedError(f"secret program: noise on {item[0]}, a {kinds[item[0]]} column "
                                    "(only numbers are noised)")
    if threshold is not None and not (isinstance(threshold, list) and len(threshold) == 2
                                      and kinds.get(threshold[0]) == "int" and isinstance(threshold[1], int)):
        raise ProtocolError("secret program: noise: threshold is [an int root column, an int]")
    return spec


def _input_columns(index: int, spec) -> list[tuple[str, str]]:
    columns = spec.get("columns") if isinstance(spec, dict) else None
    if not isinstance(columns, list) or not columns:
        raise ProtocolError(f"secret program: inputs[{index}] needs a non-empty 'columns' list")
    out = []
    for column in columns:
        if not (isinstance(column, list) and len(column) == 2 and all(isinstance(c, str) for c in column)):
            raise ProtocolError(f"secret program: inputs[{index}]: a column is [name, kind], got {column!r}")
        _check_kind(column[1], f"inputs[{index}].{column[0]}")
        out.append((column[0], column[1]))
    _unique([name for name, _ in out], f"inputs[{index}]")
    return out


MAX_CLASS_BITS = 2048  # |M| of a magnitude class: DOUBLE's exponents lie within


def _input_classes(index: int, spec: dict, columns: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """An input's optional "classes": [[column, M], ...], each a numeric column of the input and an integer
    |M| <= MAX_CLASS_BITS; as (`_input_name`, M) pairs."""
    items, kinds = spec.get("classes", []), dict(columns)
    if not isinstance(items, list):
        raise ProtocolError(f"secret program: inputs[{index}]: 'classes' is a list of [column, M]")
    out = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and classed_kind(kinds.get(item[0], ""))
                and isinstance(item[1], int) and not isinstance(item[1], bool) and abs(item[1]) <= MAX_CLASS_BITS):
            raise ProtocolError(f"secret program: inputs[{index}]: a class is [a numeric column of the input, "
                                f"an integer M], got {item!r}")
        out.append((_input_name(index, item[0]), item[1]))
    return out


def classed_kind(kind: str) -> bool:
    """Whether a magnitude class bounds values of this kind: numbers (int, fixed, decimal.<s>)."""
    return kind in ("int", "fixed") or decimal_scale(kind) is not None


def _check_kind(kind: str, where: str) -> None:
    if kind in KINDS:
        return
    if kind.startswith("decimal.") and kind[8:].isdigit() and int(kind[8:]) <= 18:
        return
    raise ProtocolError(f"secret program: {where}: unknown kind {kind!r} (int, fixed, bool, date, timestamp, text, decimal.<s>)")


def _unique(names: list[str], where: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ProtocolError(f"secret program: {where}: column name {name!r} appears twice")
        seen.add(name)


def _int_field(spec: dict, key: str, where: str) -> int:
    value = spec.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"secret program: {where}: field {key!r} is missing or not an integer")
    return value


def _node(spec, path: str, inputs) -> Node:
    if not isinstance(spec, dict) or spec.get("op") not in NODE_BUILDERS:
        op = spec.get("op") if isinstance(spec, dict) else spec
        raise ProtocolError(f"secret program: {path}: unknown operator {op!r} (one of {sorted(NODE_BUILDERS)})")
    try:
        return NODE_BUILDERS[spec["op"]](spec, path, inputs)
    except NotSupportedError as error:
        if getattr(error, "as_written", False):
            raise
        refused = NotSupportedError(_users_words(str(error), spec, path, inputs))
        refused.as_written = True
        raise refused from None


INTERNAL_PREFIX = re.compile(r"^secret program: [\w.\[\]]+: ")


def _users_words(message: str, spec: dict, path: str, inputs) -> str:
    """A refusal of the node `spec` reworded for the user: without the program's internal path, and each
    of its children's columns named as the user's expression it stands for (`written_columns`: HAVING's
    `"__a2"` as SUM(z)), never by an internal name."""
    children = [spec[key] for key in ("child", "left", "right") if isinstance(spec.get(key), dict)]
    children += [c for c in spec["children"] if isinstance(c, dict)] if isinstance(spec.get("children"), list) else []
    for i, child in enumerate(children):
        try:
            written = written_columns(_node(child, f"{path}.{i}", inputs))
        except (NotSupportedError, ProtocolError):
            continue
        for name, e in sorted(written.items(), key=lambda item: -len(item[0])):
            message = message.replace(exp.column(name, quoted=True).sql(dialect="duckdb"), e.sql(dialect="duckdb"))
    return INTERNAL_PREFIX.sub("", message)


def _expression(sql, kinds: dict[str, str], where: str) -> tuple[exp.Expression, str]:
    """An SQL expression over `kinds`' columns, parsed and typed; refused unless SPU_RULES evaluates it."""
    if not isinstance(sql, str):
        raise ProtocolError(f"secret program: {where}: an expression must be SQL text, got {sql!r}")
    try:
        e = without_zero_checks(sqlglot.parse_one(sql, read="duckdb"))
    except sqlglot.errors.ParseError as exc:
        raise ProtocolError(f"secret program: {where}: cannot parse {sql!r} ({exc})") from None
    for column in e.find_all(exp.Column):
        if column.table or column.name not in kinds:
            raise ProtocolError(f"secret program: {where}: {column.sql()} is not a column of the child "
                                f"({', '.join(kinds)})")
    if e.find(exp.AggFunc, exp.Window) is not None:
        raise ProtocolError(f"secret program: {where}: {sql!r}: aggregates and windows are operators, not expressions")
    why = spu_refusal(e, lambda c: range_kind(kinds[c.name]))
    if why is not None:
        raise NotSupportedError(f"secret program: {where}: {why}")
    return e, expression_kind(e, kinds, where)


def expression_kind(e: exp.Expression, kinds: dict[str, str], where: str) -> str:
    """The kind the evaluator gives `e`: a bare decimal column stays exact, decimals elsewhere are
    fixed point; a bare NULL is an int; mixed numeric branches (or GREATEST / LEAST arguments) are fixed point,
    dates beside timestamps timestamps."""
    inner = e.unnest()
    if isinstance(inner, exp.Column):
        return kinds[inner.name]
    if isinstance(inner, exp.Null):
        return "int"
    if isinstance(inner, (exp.Add, exp.Sub, exp.Mul, exp.Neg, exp.Abs, exp.Case, exp.If, exp.Coalesce, *EXTREMES)) \
            and (scale := exact_scale(inner, kinds)) is not None:
        return f"decimal.{scale}"  # DECIMAL arithmetic, exact as DuckDB types it (stage.Stage._exact_arithmetic)
    kind = static_kind(inner, lambda c: range_kind(kinds[c.name]))
    if kind is None and isinstance(inner, (exp.Case, exp.If, exp.Coalesce, *EXTREMES)):
        branches = {expression_kind(b, kinds, where) for b in choices(inner) if not isinstance(b, exp.Null)}
        if branches and all(k in ("int", "fixed") or decimal_scale(k) is not None for k in branches):
            kind = "fixed"  # the evaluator's CASE / COALESCE turns mixed numbers into fixed point
        elif branches == {"date", "timestamp"}:
            kind = "timestamp"  # a date beside a timestamp at midnight (stage.Stage._aligned)
    if kind is None:
        raise NotSupportedError(f"secret program: {where}: cannot tell the kind of {e.sql(dialect='duckdb')} in "
                                "secure computation (mixed or unknown kinds)")
    return kind


def exact_scale(e: exp.Expression, kinds: dict[str, str]) -> int | None:
    """The DECIMAL scale DuckDB gives `e` over columns of `kinds` (`ranges.RangePlan.exact_scale`), or None."""
    plan = RangePlan({c: range_kind(k) for c, k in kinds.items()}, 0, 1, scales=decimal_scales(kinds))
    return plan.exact_scale(e)


def _condition(sql, kinds, where) -> exp.Expression:
    e, kind = _expression(sql, kinds, where)
    if kind != "bool":
        raise ProtocolError(f"secret program: {where}: {sql!r} is not a condition")
    return e


def _order(items, kinds, where) -> list[tuple[exp.Expression, bool, bool]]:
    if not isinstance(items, list):
        raise ProtocolError(f"secret program: {where}: an order is a list of [SQL, desc, nulls_first]")
    out = []
    for i, item in enumerate(items):
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[1], bool) and isinstance(item[2], bool)):
            raise ProtocolError(f"secret program: {where}[{i}]: an order key is [SQL, desc, nulls_first]")
        out.append((_expression(item[0], kinds, f"{where}[{i}]")[0], item[1], item[2]))
    return out


def _named(items, kinds, where) -> list[tuple[str, exp.Expression, str]]:
    if not isinstance(items, list):
        raise ProtocolError(f"secret program: {where}: expected a list of [name, SQL]")
    out = []
    for i, item in enumerate(items):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise ProtocolError(f"secret program: {where}[{i}]: expected [name, SQL]")
        e, kind = _expression(item[1], kinds, f"{where}[{i}]")
        out.append((item[0], e, kind))
    return out


def _input(spec, path, inputs) -> Node:
    index = _int_field(spec, "index", path)
    if not 0 <= index < len(inputs):
        raise ProtocolError(f"secret program: {path}: no input {index} (the program has {len(inputs)})")
    return Node("input", path, {"index": index}, [], list(inputs[index]))


def _filter(spec, path, inputs) -> Node:
    child = _node(spec.get("child"), f"{path}.child", inputs)
    condition = _condition(spec.get("condition"), child.kinds(), f"{path}.condition")
    return Node("filter", path, {"condition": condition}, [child], list(child.schema))


def _project(spec, path, inputs) -> Node:
    child = _node(spec.get("child"), f"{path}.child", inputs)
    columns = _named(spec.get("columns"), child.kinds(), f"{path}.columns")
    _unique([name for name, _, _ in columns], path)
    if not columns:
        raise ProtocolError(f"secret program: {path}: a projection needs at least one column")
    return Node("project", path, {"columns": columns}, [child], [(name, kind) for name, _, kind in columns])


def merged_kind(kinds: list[str], where: str) -> str:
    """The one kind of a UNION ALL column: equal kinds stay; integers and decimals are decimals of
    the largest scale, exact as in DuckDB (as fixed point, 0.00011 and 0.0001 became one value);
    other numbers of several kinds are fixed point."""
    if len(set(kinds)) == 1:
        return kinds[0]
    scale = union_decimal_scale(kinds)
    if scale is not None:
        return f"decimal.{scale}"
    if all(k in ("int", "fixed") or decimal_scale(k) is not None for k in kinds):
        return "fixed"
    raise ProtocolError(f"secret program: {where}: a UNION ALL column has kinds {sorted(set(kinds))}")


def _union_all(spec, path, inputs) -> Node:
    items = spec.get("children")
    if not isinstance(items, list) or not items:
        raise ProtocolError(f"secret program: {path}: union_all needs a non-empty 'children' list")
    children = [_node(c, f"{path}.children[{i}]", inputs) for i, c in enumerate(items)]
    if len({len(c.schema) for c in children}) != 1:
        raise ProtocolError(f"secret program: {path}: the children of union_all have different numbers of columns")
    schema = [(name, merged_kind([c.schema[i][1] for c in children], f"{path} column {name!r}"))
              for i, (name, _) in enumerate(children[0].schema)]
    return Node("union_all", path, {}, children, schema)


def _set(spec, path, inputs) -> Node:
    """INTERSECT / EXCEPT [ALL] of two children: left's columns but `carry` compared with right's, in order."""
    kind, keep_all, carry, items = spec.get("kind"), spec.get("all"), spec.get("carry", []), spec.get("children")
    if kind not in set_ops.SET_KINDS or not isinstance(keep_all, bool):
        raise ProtocolError(f"secret program: {path}: a set operation has a kind in {set_ops.SET_KINDS} and a "
                            f"boolean 'all', got {kind!r}, {keep_all!r}")
    if not isinstance(items, list) or len(items) != 2:
        raise ProtocolError(f"secret program: {path}: a set operation has two children")
    left, right = (_node(c, f"{path}.children[{i}]", inputs) for i, c in enumerate(items))
    if not isinstance(carry, list) or any(c not in left.kinds() for c in carry):
        raise ProtocolError(f"secret program: {path}: 'carry' lists columns of the left child")
    compared = [(name, kind) for name, kind in left.schema if name not in carry]
    if len(compared) != len(right.schema):
        raise ProtocolError(f"secret program: {path}: {len(compared)} compared columns on the left, "
                            f"{len(right.schema)} on the right")
    schema = [(name, merged_kind([own, other], f"{path} column {name!r}"))
              for (name, own), (_, other) in zip(compared, right.schema)]
    schema += [(name, kind) for name, kind in left.schema if name in carry]
    return Node("set", path, {"kind": kind, "all": keep_all, "carry": list(carry)}, [left, right], schema)


def _join(spec, path, inputs) -> Node:
    kind = spec.get("kind")
    if kind not in JOIN_KINDS:
        raise ProtocolError(f"secret program: {path}: join kind {kind!r} is not one of {JOIN_KINDS}")
    left = _node(spec.get("left"), f"{path}.left", inputs)
    right = _node(spec.get("right"), f"{path}.right", inputs)
    lk, rk = spec.get("left_keys", []), spec.get("right_keys", [])
    if not isinstance(lk, list) or not isinstance(rk, list) or len(lk) != len(rk):
        raise ProtocolError(f"secret program: {path}: left_keys and right_keys are lists of the same length")
    if kind == "cross" and lk:
        raise ProtocolError(f"secret program: {path}: a cross join has no keys")
    left_keys = [_expression(k, left.kinds(), f"{path}.left_keys[{i}]")[0] for i, k in enumerate(lk)]
    right_keys = [_expression(k, right.kinds(), f"{path}.right_keys[{i}]")[0] for i, k in enumerate(rk)]
    schema = list(left.schema) if kind in ("semi", "anti") else [*left.schema, *right.schema]
    _unique([name for name, _ in schema], path)
    condition = spec.get("condition")
    if condition is not None:
        if kind not in ("inner", "cross", "left"):  # left: pairs failing it count as unmatched
            raise NotSupportedError(f"secret program: {path}: a residual condition on a {kind} join in secure "
                                    "computation (inner, cross and left joins only)")
        condition = _condition(condition, dict(schema), f"{path}.condition")
    null_aware = spec.get("null_aware", False)
    if not isinstance(null_aware, bool) or (null_aware and kind != "anti"):
        raise ProtocolError(f"secret program: {path}: null_aware is a boolean of anti joins")
    if null_aware and len(lk) != 1:
        raise NotSupportedError(f"secret program: {path}: NOT IN over {len(lk)} columns in secure computation; "
                                "write NOT EXISTS")
    args = {"kind": kind, "left_keys": left_keys, "right_keys": right_keys, "condition": condition,
            "null_aware": null_aware, **_unique_side(spec, kind, path)}
    return Node("join", path, args, [left, right], schema)


PASSING = ("filter", "sort", "distinct", "window")  # operators that keep their input's values as they are
MAX_KEY_CLASS = 60  # a classed key is compared on M + 2 bits: at most the sort's 62-bit packed column


def key_classes(node: Node, classes: dict[str, int]) -> dict[str, int]:
    """Sets each join's, aggregate's and DISTINCT's `key_classes` (per join key pair, GROUP BY key or
    DISTINCT column: M where the keys are integer columns whose values are an input column's, unchanged
    or a MIN/MAX of them, with a published class |v| < 2^M; else None), so their sorts compare M + 2
    bits, not 64 (`sr.pk_join`, `sr.semi_join`, `sr.aggregate`, `sr.distinct`). Each owner checks its
    values against its classes before sharing, and the sorts compare a NULL key or an invalid row's as
    0: the bound holds for every row. Returns the node's
    classed columns (name -> M)."""
    subs = [key_classes(c, classes) for c in node.children]
    a = node.args
    if node.op == "input":
        return {c: classes[_input_name(a["index"], c)] for c, kind in node.schema
                if kind == "int" and _input_name(a["index"], c) in classes}
    if node.op == "project":
        return _bare(a["columns"], subs[0])
    if node.op == "join":
        a["key_classes"] = [_key_class(keys, subs) for keys in zip(a["left_keys"], a["right_keys"])]
        return {name: bits for sub in subs for name, bits in sub.items() if name in node.kinds()}
    if node.op == "distinct":
        a["key_classes"] = [subs[0].get(name) if subs[0].get(name, MAX_KEY_CLASS + 1) <= MAX_KEY_CLASS else None
                            for name, _ in node.schema]
    if node.op == "aggregate":
        a["key_classes"] = [_key_class((e,), subs) for _, e, _ in a["keys"]]
        extremes = [(name, arg, None) for name, func, arg, _ in a["aggregates"] if func in ("MIN", "MAX")]
        return _bare([*a["keys"], *extremes], subs[0])
    return subs[0] if node.op in PASSING else {}


def _bare(items, sub: dict[str, int]) -> dict[str, int]:
    """The classes of (name, expression, _) items whose expression is a classed column as it is."""
    return {name: sub[e.name] for name, e, _ in items if isinstance(e, exp.Column) and e.name in sub}


def _key_class(keys, subs: list[dict[str, int]]) -> int | None:
    """M of keys compared with each other, each a classed column of its side; else None."""
    bits = [sub.get(key.name) if isinstance(key, exp.Column) else None for key, sub in zip(keys, subs)]
    if None in bits or max(bits) > MAX_KEY_CLASS:
        return None
    return max(0, *bits)


def _unique_side(spec: dict, kind: str, path: str) -> dict:
    """`unique`: the side ("left" | "right") whose join keys are unique, for a sort-based PK-FK join of an
    inner or LEFT join (`secret_relation.pk_join`); `declared`: the declared key it rests on (checked)."""
    unique, declared, many = spec.get("unique"), spec.get("declared"), spec.get("declared_many")
    if unique not in (None, "left", "right") or (unique and (kind not in ("inner", "left") or not spec.get("left_keys"))):
        raise ProtocolError(f"secret program: {path}: unique is null, or 'left' / 'right' of a keyed inner or "
                            "left join")
    for value in (declared, many):
        if value is not None and (unique is None or not isinstance(value, str)):
            raise ProtocolError(f"secret program: {path}: declared / declared_many name the key of a side of a "
                                "sort-based join")
    return {"unique": unique, "declared": declared, "declared_many": many}


def _aggregate(spec, path, inputs) -> Node:
    child = _node(spec.get("child"), f"{path}.child", inputs)
    kinds = child.kinds()
    keys = _named(spec.get("keys", []), kinds, f"{path}.keys")
    items = spec.get("aggregates")
    if not isinstance(items, list):
        raise ProtocolError(f"secret program: {path}: 'aggregates' is a list of [name, FUNC, SQL|null, distinct]")
    aggregates, schema = [], [(name, kind) for name, _, kind in keys]
    for i, item in enumerate(items):
        where = f"{path}.aggregates[{i}]"
        if not (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str) and item[1] in AGGREGATES
                and isinstance(item[3], bool)):
            raise ProtocolError(f"secret program: {where}: expected [name, COUNT|SUM|AVG|MIN|MAX, SQL|null, distinct]")
        name, func, sql, distinct = item
        if sql is None and (func != "COUNT" or distinct):
            raise ProtocolError(f"secret program: {where}: only COUNT(*) has no argument")
        if distinct and func not in DISTINCT_AGGREGATES:
            raise NotSupportedError(f"secret program: {where}: {func}(DISTINCT ...) in secure computation "
                                    f"({', '.join(DISTINCT_AGGREGATES)} of DISTINCT x only)")
        arg, arg_kind = _expression(sql, kinds, where) if sql is not None else (None, None)
        if distinct and func != "COUNT" and arg_kind == "bool":
            raise NotSupportedError(f"secret program: {where}: {func}(DISTINCT ...) of booleans in secure "
                                    "computation; write it of CAST(x AS INTEGER)")
        aggregates.append((name, func, arg, distinct))
        schema.append((name, aggregate_kind(func, arg_kind, where)))
    _unique([name for name, _ in schema], path)
    threshold = spec.get("threshold")
    if threshold is not None:
        k = threshold.get("k") if isinstance(threshold, dict) else None
        provenance = threshold.get("provenance", []) if isinstance(threshold, dict) else None
        if not isinstance(k, int) or isinstance(k, bool) or k < 1 or not isinstance(provenance, list) \
                or any(p not in kinds for p in provenance):
            raise ProtocolError(f"secret program: {path}.threshold: expected {{'k': int >= 1, 'provenance': "
                                f"[columns of the child]}}")
        once = threshold.get("once", [])
        if not isinstance(once, list) or any(p not in provenance for p in once):
            raise ProtocolError(f"secret program: {path}.threshold.once: expected [provenance columns]")
        threshold = (k, list(provenance))
    else:
        once = []
    args = {"keys": keys, "aggregates": aggregates, "threshold": threshold, "once": once,
            "per_row": _per_row(spec, keys, path)}
    return Node("aggregate", path, args, [child], schema)


def _per_row(spec: dict, keys, path: str) -> dict | None:
    """`per_row`: {"null_group": bool}, the planner's word that the keys are unique in the input, so each row
    is its group (`sr._per_row`); `null_group` (one key only): rows with a NULL key form one more group."""
    per_row = spec.get("per_row")
    if per_row is None:
        return None
    null_group = per_row.get("null_group") if isinstance(per_row, dict) else None
    if not keys or not isinstance(null_group, bool) or (null_group and len(keys) != 1):
        raise ProtocolError(f"secret program: {path}: per_row is {{'null_group': bool}} of a GROUP BY (one key "
                            "with a NULL group)")
    return {"null_group": null_group}


def aggregate_kind(func: str, arg_kind: str | None, where: str) -> str:
    """COUNT: int; AVG: fixed; SUM of booleans: int; SUM/MIN/MAX: the argument's kind."""
    if func == "COUNT":
        return "int"
    if func in ("SUM", "AVG") and arg_kind not in ("int", "fixed", "bool") and decimal_scale(arg_kind) is None:
        raise NotSupportedError(f"secret program: {where}: {func} of {arg_kind} values in secure computation")
    if func == "AVG":
        return "fixed"
    return "int" if arg_kind == "bool" and func == "SUM" else arg_kind


def _distinct(spec, path, inputs) -> Node:
    child = _node(spec.get("child"), f"{path}.child", inputs)
    return Node("distinct", path, {}, [child], list(child.schema))


def _window(spec, path, inputs) -> Node:
    child = _node(spec.get("child"), f"{path}.child", inputs)
    kinds = child.kinds()
    name, func = spec.get("name"), spec.get("func")
    if not isinstance(name, str) or name in kinds:
        raise ProtocolError(f"secret program: {path}: a window needs a new column name, got {name!r}")
    if func not in sr.WINDOW_FUNCS:
        raise NotSupportedError(f"secret program: {path}: window function {func!r} in secure computation "
                                f"(one of {', '.join(sr.WINDOW_FUNCS)})")
    sql = spec.get("arg")
    if (sql is None) != (func in ("row_number", "rank", "dense_rank")) and func != "count":
        raise ProtocolError(f"secret program: {path}: {func} {'takes no' if sql is not None else 'needs an'} argument")
    arg, arg_kind = _expression(sql, kinds, f"{path}.arg") if sql is not None else (None, None)
    partition = [_expression(p, kinds, f"{path}.partition[{i}]")[0] for i, p in enumerate(spec.get("partition", []))]
    order = _order(spec.get("order", []), kinds, f"{path}.order")
    if func in ("rank", "dense_rank") and not order:
        raise ProtocolError(f"secret program: {path}: {func} needs an order")
    if func in ("min", "max") and arg_kind == "text":
        raise NotSupportedError(f"secret program: {path}: {func.upper()}() OVER (...) of text in secure computation")
    kind = "int" if func in ("row_number", "rank", "dense_rank", "count") else \
        aggregate_kind(func.upper(), arg_kind, path)
    frame = spec.get("frame")
    if frame not in (None, *sr.WINDOW_FRAMES) or (frame is not None and func in ("row_number", "rank", "dense_rank")) \
            or (frame == "rows" and not order):
        raise ProtocolError(f"secret program: {path}: frame {frame!r}: null, or for an aggregate window one of "
                            f"{sr.WINDOW_FRAMES} (\"rows\" over an order)")
    args = {"name": name, "func": func, "arg": arg, "partition": partition, "order": order, "frame": frame}
    return Node("window", path, args, [child], [*child.schema, (name, kind)])


def _sort(spec, path, inputs) -> Node:
    child = _node(spec.get("child"), f"{path}.child", inputs)
    keys = _order(spec.get("keys"), child.kinds(), f"{path}.keys")
    limit, offset = spec.get("limit"), spec.get("offset", 0)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0) \
            or not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ProtocolError(f"secret program: {path}: limit is null or an int >= 0, offset an int >= 0")
    return Node("sort", path, {"keys": keys, "limit": limit, "offset": offset}, [child], list(child.schema))


NODE_BUILDERS = {"input": _input, "filter": _filter, "project": _project, "union_all": _union_all,
                 "join": _join, "aggregate": _aggregate, "distinct": _distinct, "window": _window, "sort": _sort,
                 "set": _set}


# -- the output's types ------------------------------------------------------------------------------

def arrow_type(kind: str) -> pa.DataType:
    scale = decimal_scale(kind)
    if scale is not None:
        return pa.decimal128(38, scale)
    return {"int": pa.int64(), "fixed": pa.float64(), "text": pa.string(), "date": pa.date32(),
            "timestamp": pa.timestamp("us"), "bool": pa.bool_()}[kind]


def output_schema(program: Program) -> pa.Schema:
    """Arrow types of the result columns, from their kinds."""
    return pa.schema([(name, arrow_type(kind)) for name, kind in program.outputs])


# -- the limits each owner checks before sharing -----------------------------------------------------

def row_bound(node: Node, rows: dict[int, int]) -> int:
    """The public number of rows `node` yields (valid or not)."""
    sizes = [row_bound(c, rows) for c in node.children]
    if node.op == "input":
        return rows[node.args["index"]]
    if node.op == "union_all":
        return sum(sizes)
    if node.op == "join":
        n, m = sizes
        if node.args["kind"] in ("semi", "anti") or node.args["unique"]:
            return n + m
        return {"left": n * m + n, "full": n * m + n + m}.get(node.args["kind"], n * m)
    if node.op == "set":
        return sum(sizes)
    if node.op == "aggregate" and not node.args["keys"]:
        return 1
    if node.op == "aggregate" and (node.args["per_row"] or {}).get("null_group"):
        return sizes[0] + 1  # the rows, and the group of the rows with a NULL key
    return sizes[0]


def largest_rows(node: Node, rows: dict[int, int]) -> int:
    """The most rows any node of the tree yields: an aggregate or a window over a join adds up its
    n*m pairs even when the root (an ungrouped aggregate) yields one row."""
    return max([row_bound(node, rows), *(largest_rows(c, rows) for c in node.children)])


def input_limits(program: Program, rows: dict[int, int], frac: int) -> dict[int, dict]:
    """Per input and column, the limit (`ranges.Limit`) its owner checks before sharing (`range_plan`)."""
    plan = range_plan(program, rows, frac)
    return {i: {c: plan.limits[_input_name(i, c)] for c, _ in cols} for i, cols in enumerate(program.inputs)}


def range_plan(program: Program, rows: dict[int, int], frac: int) -> RangePlan:
    """Every column the program computes, written over the input columns, proven exact by
    `ranges.RangePlan` with the inputs' published classes: the same function of the program and the
    row counts at every party, and at plan time with the published sizes (planner/magnitudes.py),
    which bound the actual counts, so the limits there are never looser than at run time."""
    kinds = {_input_name(i, c): k for i, cols in enumerate(program.inputs) for c, k in cols}
    biggest = max([largest_rows(program.root, rows), *rows.values(), 1])
    plan = RangePlan({c: range_kind(k) for c, k in kinds.items()}, frac, biggest, scales=decimal_scales(kinds),
                     bounds=program.classes)
    _limit_walk(program.root, plan)
    return plan.at_decimal_units()


def _input_name(index: int, column: str) -> str:
    return f"#{index}.{column}"


def input_column(name: str) -> str:
    """The input column an `_input_name` stands for, as the planner named it ("#0.o.amount" -> "o.amount")."""
    return name.partition(".")[2]


def _over(e: exp.Expression, columns: dict[str, exp.Expression]) -> exp.Expression:
    """`e` with the child's columns replaced by their expressions over the inputs."""
    return e.copy().transform(lambda x: columns[x.name].copy() if isinstance(x, exp.Column) else x)


def _exact(plan: RangePlan, e: exp.Expression, why: str) -> exp.Expression:
    plan.need(e, plan.reveal_range(plan.info(e)[0]), why)
    return e


def _limit_walk(node: Node, plan: RangePlan) -> dict[str, exp.Expression]:
    """The node's columns as expressions over the inputs, tightening `plan` for what the node computes."""
    subs = [_limit_walk(c, plan) for c in node.children]
    a, where = node.args, f"{node.path} ({node.op})"
    if node.op == "input":
        return {c: exp.column(_input_name(a["index"], c), quoted=True) for c, _ in node.schema}
    if node.op in ("union_all", "set"):
        return _union_limits(node, plan, subs, where)
    columns = {k: v for s in subs for k, v in s.items()}
    if node.op == "filter":
        plan.need(_over(a["condition"], columns), 2.0, f"the condition of {where}")
    elif node.op == "project":
        return {name: _exact(plan, _over(e, columns), f"the column {name} of {where}") for name, e, _ in a["columns"]}
    elif node.op == "join":
        for lk, rk in zip(a["left_keys"], a["right_keys"]):
            plan._need_compared([_over(lk, subs[0]), _over(rk, subs[1])], f"a join key of {where}")
            kinds = [expression_kind(k, c.kinds(), where) for k, c in zip((lk, rk), node.children)]
            scale = sr.exact_key_scale(*kinds) if kinds[0] != kinds[1] else None
            for key, sub in ((lk, subs[0]), (rk, subs[1])):
                if scale is not None:  # compared as the exact integer x * 10^scale
                    plan.need(_over(key, sub), 2.0 ** 62 / 10 ** scale, f"a join key of {where} at scale {scale}")
        if a["condition"] is not None:
            plan.need(_over(a["condition"], columns), 2.0, f"the condition of {where}")
        return {name: columns[name] for name, _ in node.schema}
    elif node.op == "aggregate":
        return _aggregate_limits(node, plan, columns, where)
    elif node.op == "distinct":
        for e in columns.values():
            plan._need_compared([e], f"a column of {where}")
    elif node.op == "window":
        for e in [*a["partition"], *(o for o, _, _ in a["order"])]:
            plan._need_compared([_over(e, columns)], f"a sort key of {where}")
        func, arg = a["func"], _over(a["arg"], columns) if a["arg"] is not None else None
        value = exp.Count(this=exp.Star()) if func in ("row_number", "rank", "dense_rank", "count") else \
            {"sum": exp.Sum, "min": exp.Min, "max": exp.Max}[func](this=arg)
        return {**columns, a["name"]: _exact(plan, value, f"the window {a['name']} of {where}")}
    elif node.op == "sort":
        for e, _, _ in a["keys"]:
            plan._need_compared([_over(e, columns)], f"a sort key of {where}")
    return columns


def _union_limits(node: Node, plan: RangePlan, subs: list[dict], where: str) -> dict[str, exp.Expression]:
    """UNION ALL and set operations: each output column is one of its branches' values (an int branch of a
    fixed or decimal column is rescaled); a set operation also compares every column but the carried ones."""
    carry = node.args.get("carry", [])
    branches = [[e for name, e in sub.items() if name not in carry] for sub in subs]
    out = {}
    for i, (name, kind) in enumerate(node.schema[:len(branches[0])]):
        scale = decimal_scale(kind)
        for child, values in zip(node.children, branches):
            own = [k for c, k in child.schema if c not in carry][i]
            if own != kind and kind in ("fixed", f"decimal.{scale}"):
                limit = plan.reveal_range("fixed")  # a decimal's exact limb is rescaled to 10^scale, too
                plan.need(values[i], limit if scale is None else min(limit, 2.0 ** 62 / 10 ** scale),
                          f"the column {name} of {where} holds {'fixed-point' if scale is None else kind} values")
        out[name] = exp.Coalesce(this=branches[0][i].copy(), expressions=[b[i].copy() for b in branches[1:]])
        if node.op == "set":
            plan._need_compared([out[name]], f"the column {name} of {where}")
    return {**out, **{c: subs[0][c] for c in carry}}


def _aggregate_limits(node: Node, plan: RangePlan, columns, where: str) -> dict[str, exp.Expression]:
    a, out = node.args, {}
    for name, e, _ in a["keys"]:
        out[name] = _over(e, columns)
        plan._need_compared([out[name]], f"the group key {name} of {where}")
    for name, func, arg, distinct in a["aggregates"]:
        if distinct:  # sorted by value; SUM / AVG of the distinct values within the bounds of all the rows'
            plan._need_compared([_over(arg, columns)], f"{func}(DISTINCT ...) of {where}")
            if func == "COUNT":
                out[name] = exp.Count(this=exp.Star())
                continue
        if func == "AVG" and plan.rows >= AVG_MAX_ROWS:
            raise DataError(f"secret program: AVG {name} of {where} may divide by a count of up to {plan.rows} "
                            f"rows; the SPU's division takes counts below 2^32: use SUM and COUNT")
        value = sr.aggregate_node(func, _over(arg, columns) if arg is not None else None)
        out[name] = _exact(plan, value, f"the aggregate {name} of {where}")
    for column in (a["threshold"] or (0, []))[1]:
        plan._need_compared([columns[column]], f"the threshold of {where}")
    return out


# -- running a program -------------------------------------------------------------------------------

def run_program(s: SpuSession, program: Program, tables: dict[int, pa.Table], issuer_index: int | None,
                issuer: str | None = None, out: str = "secret") -> pa.Table | None:
    """Every compute party, in lockstep: share my input relations, run the program, open the root's
    valid rows to the issuer. Returns the result at the issuer (issuer_index = its index in
    s.parties), else None. An issuer outside the SPU (`issuer`, its party name) gets each party's
    shares under `{out}/shares/{party}` (`receive_program_output`)."""
    if issuer_index is None and issuer is None:
        raise ProgrammingError("run_program: the issuer is a compute party (issuer_index) or named (issuer)")
    owners, rows, inputs = _exchange_sizes(s, program, tables)
    limits = input_limits(program, rows, s.frac_bits)
    encoded = {i: _encode_input(inputs[i], table, limits[i], s.frac_bits) for i, table in tables.items()}
    relations = {i: _share_input(s, inputs[i], owners[i], rows[i], encoded.get(i))
                 for i in range(len(program.inputs))}
    result = execute(s, program.root, relations, provenance_bits(program, rows))
    if program.noise is not None:
        result = add_noise(s, result, program.noise)
    return _open_result(s, program, result, issuer_index, issuer, out)


def _exchange_sizes(s: SpuSession, program: Program, tables: dict[int, pa.Table]
                    ) -> tuple[dict[int, int], dict[int, int], list[list[tuple[str, str]]]]:
    """Tell every other party which inputs I hold, their row counts and their text columns' width
    classes (public sizes, `values.text_width`): 1 round, the same leg as the session's set-up where
    the session was only offered (`SpuSession.offer`). Returns the owners, the row counts and
    each input's columns in their shared kinds (text as `text.<w>`)."""
    for i, table in tables.items():
        _check_input_table(program, i, table)
    inputs = [list(columns) for columns in program.inputs]
    for i, table in tables.items():
        inputs[i] = _shared_kinds(program.inputs[i], table)
    mine = json.dumps({str(i): [t.num_rows, inputs[i]] for i, t in tables.items()}).encode()
    tag = s.tag("program-sizes")
    s.rounds += 1
    for j in s.others():
        s.endpoint.send(s.parties[j], tag, mine)
    s.accept()  # the session's set-up, if only offered: its seeds came in the same leg as these sizes
    owners = {i: s.index for i in tables}
    rows = {i: t.num_rows for i, t in tables.items()}
    for j in s.others():
        for key, (count, columns) in json.loads(s._recv(j, tag).decode()).items():
            if int(key) in owners:
                raise ProtocolError(f"secret program: input {key} is held by two parties")
            owners[int(key)], rows[int(key)] = j, int(count)
            inputs[int(key)] = _agreed_kinds(program, int(key), columns)
    missing = [i for i in range(len(program.inputs)) if i not in owners]
    if missing:
        raise ProtocolError(f"secret program: no compute party holds the inputs {missing}")
    return owners, rows, inputs


def _shared_kinds(columns: list[tuple[str, str]], table: pa.Table) -> list[tuple[str, str]]:
    """An input's columns with each text column's kind at my values' width class."""
    return [(column, shared_kind(table.column(column), column)
             if kind == "text" and not pa.types.is_null(table.schema.field(column).type) else kind)
            for column, kind in columns]


def _agreed_kinds(program: Program, index: int, columns: list) -> list[tuple[str, str]]:
    """A peer's shared kinds of an input: the program's columns, text at one of `values.TEXT_CLASSES`,
    else a ProtocolError."""
    declared = program.inputs[index]
    kinds = [tuple(c) for c in columns] if isinstance(columns, list) else []
    if len(kinds) != len(declared) or any((c, value_kind(k)) != (column, kind)
                                          for (c, k), (column, kind) in zip(kinds, declared)):
        raise ProtocolError(f"secret program: input {index}'s columns were reported in kinds the program does not declare")
    return kinds


def _check_input_table(program: Program, index: int, table: pa.Table) -> None:
    """My table holds the input's columns in types its kinds encode exactly (an integer column may
    be declared fixed point; a column of NULLs fits any kind), else a ProtocolError naming it."""
    if not 0 <= index < len(program.inputs):
        raise ProtocolError(f"secret program: this party was given input {index}, which the program does not have")
    for column, kind in program.inputs[index]:
        if column not in table.column_names:
            raise ProtocolError(f"secret program: input {index} lacks the column {column!r}")
        dtype = table.schema.field(column).type
        if pa.types.is_null(dtype):
            continue
        found = kind_of(dtype)
        if found != kind and not (kind == "fixed" and (found == "int" or decimal_scale(found) is not None)):
            raise ProtocolError(f"secret program: input {index} column {column!r} holds {dtype} values, which the "
                                f"program declares {kind}")


def _encode_input(columns: list[tuple[str, str]], table: pa.Table, limits: dict, frac: int) -> dict:
    """My input's columns (in their shared kinds) as ring limbs and validity, each checked against
    its limit first (DataError naming the column: nothing has been shared yet)."""
    return {column: encode(table.column(column), kind, frac, limits.get(column), column) for column, kind in columns}


def _share_input(s: SpuSession, columns: list[tuple[str, str]], owner: int, rows: int,
                 encoded: dict | None) -> SecretRelation:
    """Secret-share one input relation from its owner (0 rounds: PRG-seeded shares); all rows valid."""
    out = {}
    for column, kind in columns:
        limbs, valid = encoded[column] if encoded is not None else ([None] * limbs_of(kind), None)
        fracs = limb_fracs(kind, s.frac_bits)
        shared = [arith.share_input(s, owner, limb, (rows,), f) for limb, f in zip(limbs, fracs)]
        out[column] = SV(shared, arith.share_input(s, owner, valid, (rows,), 0), value_kind(kind))
    return SecretRelation(out, arith.public(s, np.ones(rows, dtype=np.int64)))


def provenance_bits(program: Program, rows: dict[int, int]) -> dict[str, int]:
    """Each input's provenance column (`__prov_<relation>`: its owner's row numbers 0..n-1, n public) -> b,
    its values in [0, 2^(b-1)) (as `relational.Counted.bits`)."""
    return {column: max(1, (rows[i] - 1).bit_length()) + 1 for i, columns in enumerate(program.inputs)
            for column, kind in columns if column.startswith(PROVENANCE) and kind == "int"}


def execute(s: SpuSession, node: Node, relations: dict[int, SecretRelation],
            widths: dict[str, int] | None = None) -> SecretRelation:
    """The secret relation `node` yields, every column in the kind the program declares; `widths`: the
    provenance columns' (`provenance_bits`)."""
    rel = _execute_node(s, node, relations, widths)
    return SecretRelation({name: sr.conform(s, rel.columns[name], kind) for name, kind in node.schema}, rel.valid)


def _execute_node(s: SpuSession, node: Node, relations: dict[int, SecretRelation],
                  widths: dict[str, int] | None) -> SecretRelation:
    children = [execute(s, c, relations, widths) for c in node.children]
    a = node.args
    if node.op == "input":
        return relations[a["index"]]
    if node.op == "filter":
        return sr.filter_rows(s, children[0], a["condition"])
    if node.op == "project":
        return sr.project(s, children[0], a["columns"])
    if node.op == "union_all":
        return sr.union_all(s, children, [k for _, k in node.schema])
    if node.op == "set":
        kinds = [k for name, k in node.schema if name not in a["carry"]]
        return set_ops.set_operation(s, a["kind"], a["all"], *children, kinds, a["carry"])
    if node.op == "join":
        return _execute_join(s, node, *children)
    if node.op == "aggregate":
        return sr.aggregate(s, children[0], [(n, e) for n, e, _ in a["keys"]], a["aggregates"], a["threshold"],
                            [k for _, k in node.schema], a.get("key_classes"), a["per_row"], widths, a.get("once", []))
    if node.op == "distinct":
        return sr.distinct(s, children[0], a.get("key_classes"))
    if node.op == "window":
        return sr.window(s, children[0], a["name"], a["func"], a["arg"], a["partition"], a["order"], a["frame"])
    return sr.sort_rows(s, children[0], a["keys"], a["limit"], a["offset"])


def _execute_join(s: SpuSession, node: Node, left: SecretRelation, right: SecretRelation) -> SecretRelation:
    a = node.args
    if a["kind"] in ("semi", "anti"):  # only left rows can be valid
        return _kept_rows(s, sr.semi_join(s, _marked(s, left), right, a["left_keys"], a["right_keys"],
                                          a["kind"] == "anti", a["null_aware"], a.get("key_classes")), left.n)
    if a["unique"]:
        compact = many_side_only(a["kind"], a["unique"])
        kept = left if a["unique"] == "right" else right
        if compact and a["unique"] == "right":
            left = _marked(s, left)
        elif compact:
            right = _marked(s, right)
        joined = sr.pk_join(s, left, right, a["left_keys"], a["right_keys"], a["unique"], a["kind"] == "left",
                            a["declared"], a.get("key_classes"), a["declared_many"])
        joined = _kept_rows(s, joined, kept.n) if compact else joined
        return joined if a["condition"] is None else sr.filter_rows(s, joined, a["condition"])
    right_kinds = {name: v.kind for name, v in right.columns.items()}
    if a["kind"] == "full":
        return set_ops.full_join(s, left, right, a["left_keys"], a["right_keys"], right_kinds)
    return sr.pairs_join(s, left, right, a["left_keys"], a["right_keys"], a["condition"], a["kind"] == "left",
                         right_kinds)


KEPT_SIDE = "__kept_side"  # a public 1 on each row of the side a sort-based join keeps, carried through its sort


def _marked(s: SpuSession, kept: SecretRelation) -> SecretRelation:
    """`kept` with the column KEPT_SIDE: a public 1 on every row (the join's sort carries it; the other
    side's rows get 0)."""
    ones = arith.public(s, np.ones(kept.n, dtype=np.int64))
    return SecretRelation({**kept.columns, KEPT_SIDE: SV([ones], ones, "int")}, kept.valid)


def _kept_rows(s: SpuSession, joined: SecretRelation, m: int) -> SecretRelation:
    """The m rows of the side a sort-based join keeps, out of its n + m, where the other side's rows are
    all invalid (a semi- or anti-join's right rows; the unique side's of an inner join or of a LEFT join
    preserving the many side): the rows shuffled (N rounds), then KEPT_SIDE opened (1 round), which shows
    m ones at uniformly random places, m being public. So the operators above hold m rows, not n + m,
    and nothing but the public sizes is learnt. With m = 0 or m = n + m (the other side empty) there
    is nothing to find: no round."""
    columns = {name: v for name, v in joined.columns.items() if name != KEPT_SIDE}
    if m in (0, joined.n):
        return SecretRelation({name: SV([c[:m] for c in v.limbs], v.valid[:m], v.kind)
                               for name, v in columns.items()}, joined.valid[:m])
    flat = relational.shuffle(s, [*sr._flatten(SecretRelation(columns, joined.valid)), joined.valid,
                                  joined.columns[KEPT_SIDE].value])
    (side,) = s.open_many(arith=[flat[-1].data])
    keep = np.flatnonzero(side == 1)
    rows = [ArithShare(c.data[keep], c.frac) for c in flat[:-1]]
    return SecretRelation(sr._rebuild(rows[:-1], columns), rows[-1])


# -- differential privacy: noise on one party's shares before the opening ---------------------------

def add_noise(s: SpuSession, rel: SecretRelation, noise: dict) -> SecretRelation:
    """The noise party (never the issuer: the planner's choice) adds one draw of the mechanism, from
    OpenDP's samplers as on the spine, to its share of each noised value (0 rounds); the others add
    nothing. So the opened value is the exact one plus noise, which no party sees apart: the noise
    party knows the draw, not the value. A noised value is never NULL (an empty SUM opens as noise
    around 0, as on the spine). Threshold [column, t]: a row stays valid only if its noisy count is
    >= t, by a secret comparison (the spine's threshold on the noisy count): 1 comparison."""
    if noise["party"] not in s.parties:
        raise ProtocolError(f"secret program: noise: {noise['party']!r} is not a compute party")
    party = s.parties.index(noise["party"])
    columns = dict(rel.columns)
    for name, scale in noise["columns"]:
        v = columns[name]
        limbs = _noised_limbs(v, scale, noise["mechanism"]) if s.index == party else list(v.limbs)
        columns[name] = SV(limbs, arith.public(s, np.ones(rel.n, dtype=np.int64)), v.kind)
    valid = rel.valid
    if noise["threshold"] is not None and rel.n:
        name, at_least = noise["threshold"]
        valid = _at_least(s, [columns[name].value], at_least, times=valid)
    return SecretRelation(columns, valid)


def _noised_limbs(v: SV, scale: float, mechanism: str) -> list[ArithShare]:
    """My share of `v` plus one draw per row: integer (discrete) noise for an int; for fixed point the
    real draw at the limb's 2^-F resolution; for decimal.<s> the draw rounded to 10^-s on both limbs
    (rounding a noisy value to its grid is post-processing: the guarantee holds)."""
    n, integer = len(v.value), v.kind == "int"
    draws = privacy.sample(np.zeros(n, dtype=np.int64 if integer else np.float64), scale, integer, mechanism)
    if integer:
        return [ArithShare(v.value.data + as_ring(np.asarray(draws, dtype=np.int64)), 0)]
    digits = decimal_scale(v.kind)
    if digits is None:
        return [ArithShare(v.value.data + encode_fixed(draws, v.value.frac), v.value.frac)]
    exact = np.rint(np.asarray(draws, dtype=np.float64) * 10 ** digits).astype(np.int64)
    fixed = v.limbs[1]
    return [ArithShare(v.limbs[0].data + as_ring(exact), 0),
            ArithShare(fixed.data + encode_fixed(exact / 10 ** digits, fixed.frac), fixed.frac)]


# -- opening the result ------------------------------------------------------------------------------

def _open_result(s: SpuSession, program: Program, rel: SecretRelation, issuer_index: int | None,
                 issuer: str | None, out: str) -> pa.Table | None:
    """Open the root's valid rows to the issuer only: shuffled (unless the root is a sort), every
    value of an invalid row zeroed (1 round), then one opening to the issuer."""
    values = nulls_zeroed(s, [sr.conform(s, rel.columns[name], kind) for name, kind in program.outputs])
    flat = [c for v in values for c in (*v.limbs, v.valid)] + [rel.valid]
    if program.root.op != "sort" and rel.n:
        flat = relational.shuffle(s, flat)
    row_valid = flat[-1]
    zeroed = arith.beaver_mul_many(s, [(c, row_valid) for c in flat[:-1]])
    arrays = [c.data for c in zeroed] + [row_valid.data]
    widths = [len(v.limbs) for v in values]  # public: text's agreed width classes
    if issuer_index is not None:
        opened = s.open_many(arith=arrays, to=issuer_index)
        return decode_result(program, opened, s.frac_bits, widths) if opened else None
    table = pa.table({f"c{i}": pa.array(x, pa.uint64()) for i, x in enumerate(arrays)},
                     metadata={"limbs": ",".join(map(str, widths))})
    s.endpoint.send_table(issuer, f"{out}/shares/{s.me}", table)
    return None


def receive_program_output(endpoint, step, program: Program) -> pa.Table:
    """At an issuer outside the SPU: add up every compute party's shares of the result, decode it."""
    total, widths = None, None
    for party in step.compute:
        table = endpoint.recv_table(party, f"{step.out}/shares/{party}")
        arrays = [np.asarray(table.column(i).to_numpy(zero_copy_only=False), dtype=np.uint64)
                  for i in range(table.num_columns)]
        if total is not None and (len(arrays) != len(total) or table.num_rows != len(total[0])):
            raise ProtocolError(f"secret program {step.out}: {party} sent {table.num_columns} columns of "
                                f"{table.num_rows} rows, the others {len(total)} of {len(total[0])}")
        total = arrays if total is None else [x + y for x, y in zip(total, arrays)]
        sent = _output_widths(program, table)
        if widths is not None and sent != widths:
            raise ProtocolError(f"secret program {step.out}: {party} sent text of other widths than the others")
        widths = sent
    width = sum(widths) + len(widths) + 1 if total is not None else 0
    if total is None or len(total) != width:
        raise ProtocolError(f"secret program {step.out}: the compute parties sent {len(total or [])} columns, "
                            f"expected {width}")
    return decode_result(program, total, step.frac_bits, widths)


def _output_widths(program: Program, table: pa.Table) -> list[int]:
    """Each output's limb count as a compute party sent it (text: its width class; none sent: the
    kinds' own), checked against the kinds."""
    sent = (table.schema.metadata or {}).get(b"limbs", b"").decode()
    widths = [int(w) for w in sent.split(",")] if sent else [limbs_of(kind) for _, kind in program.outputs]
    if len(widths) != len(program.outputs) or any(
            w != limbs_of(kind) and not (kind == "text" and w in {limbs_of(c) for c in TEXT_CLASSES})
            for w, (_, kind) in zip(widths, program.outputs)):
        raise ProtocolError("secret program: a compute party sent outputs of limb counts the program does not declare")
    return widths


def decode_result(program: Program, opened: list[np.ndarray], frac: int, widths: list[int]) -> pa.Table:
    """The opened columns as the result table (`widths`: each output's limbs): rows whose validity
    opened 0 are dropped."""
    keep = np.flatnonzero(opened[-1] == 1)
    columns, i = {}, 0
    for (name, kind), k in zip(program.outputs, widths):
        columns[name] = decode_column([x[keep] for x in opened[i:i + k]], opened[i + k][keep], kind, frac)
        i += k + 1
    return pa.table(columns, schema=output_schema(program))

