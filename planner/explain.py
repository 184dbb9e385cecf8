"""EXPLAIN: the physical plan as text — each operator's device, what moves, who learns what."""

from __future__ import annotations

from sqlsecure.executors.spu.values import MAX_TEXT_BYTES
from sqlsecure.planner.physical import (
    Compute, EnclaveStage, EquiJoin, Finish, HEGroupBy, Mask, Noise, Reveal, RunLocal, SecretQuery, SecureStage,
)


def _movements(step) -> list[str]:
    moves = []
    if isinstance(step, EquiJoin) and step.left_party != step.right_party:
        a, b = step.left_party, step.right_party
        if step.psi == "unbalanced":
            small = b if step.large == a else a
            moves += [f"{step.large} -> {small}: its blinded key set (32 B per distinct key), once per key epoch only",
                      f"{small} <-> {step.large}: {small}'s blinded keys, 32 B per distinct key each way, then the "
                      "positions of the matches (8 B each)"]
        elif step.psi == "kkrt":
            moves += [f"{a} <-> {b}: base OTs and their extension (512 x 16 B seeds, then 64 B per cuckoo bin of the "
                      "side with more distinct keys)",
                      f"{a} <-> {b}: 3 OPRF values per distinct key of the smaller side (⌈(40 + log2 of both set "
                      "sizes) / 8⌉ B each), then the positions of the matches"]
        else:
            moves.append(f"{a} <-> {b}: blinded keys, 32 B per distinct key each way, then re-blinded (32 B per key)")
        if step.mode not in ("semi", "anti"):
            moves.append(f"{a} <-> {b}: 4 B row count per common key")
    if isinstance(step, EquiJoin):
        for holder in step.keep:
            if holder != step.left_party:
                moves.append(f"{step.left_party} -> {holder}: row index vector of {step.out} (8 B per row)")
    if isinstance(step, HEGroupBy):
        v, k = step.value_party, step.key_party
        moves += [f"{v} -> {k}: Paillier public key, then ciphertexts of {2 * step.key_bits // 8} B, each packing "
                  "the value columns of one or more rows",
                  f"{k} -> {v}: masked per-group sums (ciphertexts, several groups per ciphertext)"]
        if step.value_rows:
            moves.append(f"{v} -> {k}: the most joined rows one of its rows appears in (8 B, for the minimum group size)")
        moves += [f"{p} -> {step.issuer}: its shares of the group sums" for p in (k, v) if p != step.issuer]
    if isinstance(step, EnclaveStage):
        moves += [f"enclave -> {p}: the session and a quote; {p} verifies it before sending anything"
                  for p in dict.fromkeys((*step.inputs_by_party, step.issuer))]
        moves += [f"{p} -> enclave: its columns sealed to the attested key (X25519 + AES-GCM per batch)"
                  for p in step.inputs_by_party]
        moves.append(f"enclave -> {step.issuer}: the result, sealed to {step.issuer}'s fresh key")
    if isinstance(step, SecureStage):
        moves += [f"{p} -> SPU: its {_shared_columns(step, p)} input column(s)"
                  f"{' and its join key (2 hashed limbs)' if step.secret_join else ''} as additive shares "
                  "(PRG-seeded: no bytes for the shares themselves)" for p in step.compute]
        moves += [f"dealer -> {step.compute[-1]}: corrections of Beaver triples and other correlated randomness",
                  f"{' <-> '.join(step.compute)}: masked openings (rounds and bytes counted by the channel)"]
        if step.one_hot_groups:
            owner = _key_owner(step)
            moves += [f"{owner} -> {p}: its rows' group numbers one-hot ({step.one_hot_groups:,} words per row), masked "
                      f"by the dealer's uniform words; {p} -> {owner}: its shares of the summed columns masked the same"
                      for p in step.compute if p != owner]
        moves += [f"{p} -> {step.issuer}: its shares of the result" for p in step.compute if p != step.issuer]
    if isinstance(step, SecretQuery):
        moves += [f"{owner} -> SPU: share {relation} (its columns and a validity bit, as additive shares)"
                  for owner, relation in step.inputs]
        moves += [f"dealer -> {step.compute[-1]}: corrections of Beaver triples and other correlated randomness",
                  f"{' <-> '.join(step.compute)}: masked openings (rounds and bytes counted by the channel)"]
        moves += [f"{p} -> {step.issuer}: its shares of the result" for p in step.compute if p != step.issuer]
    if isinstance(step, Reveal) and step.party != step.to:
        moves.append(f"{step.party} -> {step.to}: {step.name} (Arrow IPC, the revealed columns only)")
    return moves


def join_algorithm(node: dict) -> str:
    """How the SPU joins: by a sort on the unique side's keys (n + m rows), or all pairs (n * m); a semi- or
    anti-join (IN, EXISTS, NOT IN, NOT EXISTS) by one sort of both sides (`secret_relation.semi_join`)."""
    if node["kind"] in ("semi", "anti"):
        rule = " (NOT IN: no row where the subquery holds a NULL, every row where it is empty)" \
            if node.get("null_aware") else ""
        return (f" [oblivious {node['kind']}-join{rule}: both sides sorted together, n+m rows; no party learns "
                "which rows match]")
    if node["kind"] not in ("inner", "left") or not node["left_keys"]:
        return ""
    if node.get("unique") is None:
        return " [all pairs: n*m rows]"
    checked = "".join(f"; {node[k]} checked unique" for k in ("declared", "declared_many") if node.get(k))
    return f" [sort-based PK-FK join, {node['unique']} side unique: n+m rows{checked}]"


def per_row(node: dict) -> str:
    """How the SPU groups: each row its own group where the keys are unique in the input (no sort)."""
    if "per_row" not in node:
        return ""
    nulls = ", the rows with a NULL key one more group" if node["per_row"]["null_group"] else ""
    return f" [per row: the keys are unique in its input, no sort{nulls}]"


def noise_lines(step) -> list[str]:
    """Differential privacy at the program's output: who noises which shares, and the noisy threshold."""
    import json

    noise = json.loads(step.program).get("noise")
    if not noise:
        return []
    line = (f"noise: {noise['party']} adds {noise['mechanism']} noise (OpenDP) to its shares of "
            f"{', '.join(f'{c} (scale {s:.4g})' for c, s in noise['columns'])} before the opening")
    if noise["threshold"] is not None:
        line += f"; a row stays only if {noise['threshold'][0]} >= {noise['threshold'][1]} (secret comparison)"
    return [line]


def magnitude_lines(step) -> list[str]:
    from sqlsecure.planner.magnitudes import magnitude_lines as lines  # late: magnitudes imports the stage

    return lines(step)


def text_width_lines(step) -> list[str]:
    """What an SPU step's compute parties learn of the text they share: each owner's width class
    (`executors/spu/values.text_width`), agreed before sharing so every party knows the limb count."""
    if isinstance(step, SecretQuery):
        import json

        inputs = json.loads(step.program)["inputs"]
        texts = [f"{step.inputs[i][1]}.{name}" for i, spec in enumerate(inputs) for name, kind in spec["columns"]
                 if kind == "text"]
        if not texts:
            return []
        shared = f"the width class of {', '.join(texts)}"
    elif isinstance(step, SecureStage):
        shared = "the width class of each text column shared, if any"
    else:
        return []
    return [f"{', '.join(step.compute)}: {shared} from its owner (28 bytes, or its longest value's UTF-8 "
            f"length rounded up to a power of two, at most {MAX_TEXT_BYTES}: log2 of that length, never the length)"]


def program_lines(step) -> list[str]:
    """The secret program as an indented operator tree, each operator on the SPU; inputs name their share step."""
    import json

    program = json.loads(step.program)
    device = f"SPU({', '.join(step.compute)})"
    lines: list[str] = []

    def walk(node: dict, depth: int) -> None:
        pad = "  " * depth
        op = node["op"]
        if op == "input":
            owner, relation = step.inputs[node["index"]]
            lines.append(f"{pad}share {relation} from PYU({owner}) -> {device}")
            return
        detail = {
            "filter": lambda: node["condition"] + (
                f" (aggregated by {node['owner']} on its own rows, padded to B = {node['padded']} rows, validity "
                "shared as a secret bit)" if "padded" in node else f" (evaluated by {node['owner']} on its own rows, "
                "shared as a secret bit)" if "owner" in node else ""),
            "project": lambda: ", ".join(f"{sql} AS {name}" for name, sql in node["columns"]),
            "join": lambda: f"{node['kind']} on ({', '.join(node['left_keys'])}) = ({', '.join(node['right_keys'])})"
                            + (f" and {node['condition']}" if node["condition"] else "") + join_algorithm(node),
            "aggregate": lambda: f"by ({', '.join(sql for _, sql in node['keys'])}): " + ", ".join(
                f"{f}({'DISTINCT ' if d else ''}{a or '*'}) AS {n}" for n, f, a, d in node["aggregates"]) + (
                f"; groups kept with >= {node['threshold']['k']} distinct "
                f"{', '.join(node['threshold']['provenance']) or 'rows'}" if node["threshold"] else "") + (
                f" ({', '.join(node['threshold']['once'])}: each row once, counted as sums without a sort)"
                if node["threshold"] and node["threshold"].get("once") else "") + per_row(node),
            "window": lambda: f"{node['func']}({node['arg'] or ''}) over partition ({', '.join(node['partition'])}) "
                              f"order ({', '.join(k + (' DESC' if d else '') for k, d, _ in node['order'])}) "
                              f"-> {node['name']}",
            "set": lambda: f"{node['kind']}{' all' if node['all'] else ''} (rows compared whole, NULLs equal)",
            "sort": lambda: ", ".join(f"{k}{' DESC' if d else ''}" for k, d, _ in node["keys"]) + (
                f" limit {node['limit']}" if node["limit"] is not None else "") + (
                f" offset {node['offset']}" if node["offset"] else ""),
        }.get(op, lambda: "")()
        lines.append(f"{pad}{op} on {device}{': ' + detail if detail else ''}")
        for child in [node[k] for k in ("child", "left", "right") if k in node] + node.get("children", []):
            walk(child, depth + 1)

    walk(program["root"], 0)
    return lines


def _key_owner(step) -> str:
    """The party whose plain GROUP BY keys number a one-hot stage's groups."""
    from sqlsecure.executors.spu.stage import _group_key_columns  # late: the stage imports the planner

    return _group_key_columns(step)[0][0]


def _spu_estimate(step) -> str:
    """Rough rounds and bytes of an SPU stage from its operators (n = rows, unknown at plan time)."""
    import sqlglot
    from sqlglot import exp

    trees = [sqlglot.parse_one(sql, read="duckdb") for sql in (*step.filters, *(sql for _, sql in step.outputs),
                                                                *step.group_by, *([step.having] if step.having else []))]
    compares = sum(len(list(t.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE))) for t in trees)
    products = sum(len(list(t.find_all(exp.Mul, exp.Case, exp.And, exp.Or))) for t in trees) + len(step.filters)
    sorts = (1 if step.group_by and not step.one_hot_groups else 0) + (1 if step.order else 0)
    per_row = 64 * compares + 32 * products
    rounds = 6 * compares + products
    text = f"~{per_row} B per row and ~{rounds} rounds for {compares} comparison(s) and {products} product(s)"
    if sorts:
        text += f"; {sorts} oblivious sort(s) of ~2 ln n levels (about 7 rounds each) and ~200 B per row"
    if step.filters or step.group_by:  # `relational.compact`: a shuffle, then the keep flags opened
        rows = f"the {step.one_hot_groups:,} group rows" if step.one_hot_groups else "the rows"
        text += f"; 1 compaction of {rows} (an oblivious shuffle and one opening: {len(step.compute) + 1} rounds)"
    if step.one_hot_groups:
        text += (f"; the group sums in 1 round, {8 * step.one_hot_groups:,} B per row from the key owner to each "
                 "other compute party and 8 B per row and aggregate back")
    return text


def _threshold_lines(phys) -> list[str]:
    """The group threshold as it is enforced: per protected owner, its distinct rows."""
    if not phys.counted:
        return [f"groups with fewer than {phys.min_group_size} rows are not revealed"]
    return [f"groups with fewer than {phys.min_group_size} distinct {party} rows are withheld "
            "(the issuer's own rows and repeated rows do not count)" for party in phys.counted]


def render_explain(plan, pushdown=None) -> str:
    phys = plan.physical
    lines = [f"EXPLAIN  (issuer: {phys.issuer})", ""]
    if plan.names:
        lines += ["names:"] + [f"  {line}" for line in plan.names] + [""]
    lines.append("operators:")
    for n, step in enumerate(phys.steps, 1):
        if isinstance(step, RunLocal):
            lines.append(f"  [{n}] PYU({step.party})  pushdown -> {step.out}")
            lines.append(f"        {step.sql}")
            lines += [f"        {line}" for line in (pushdown(step.party, step.sql) if pushdown else None) or ()]
        elif isinstance(step, EquiJoin):
            protocol = {"kkrt": "KKRT16 OT-based PSI", "ecdh": "ECDH-PSI (X25519)",
                        "unbalanced": f"unbalanced ECDH-PSI ({step.large}'s set prepared once, reused)"}[step.psi]
            what = {"inner": "inner equi-join", "left": "left join", "semi": "semi-join", "anti": "anti-join"}
            kind = f"{protocol} {what[step.mode]}" if step.left_party != step.right_party else "local join"
            lines.append(f"  [{n}] {step.device}  {kind} -> {step.out}")
            lines.append(
                f"        {step.left_base}.({', '.join(step.left_keys)}) = {step.right}.({', '.join(step.right_keys)}),"
                f" then matched onto {step.left}; kept by {', '.join(step.keep)}"
            )
        elif isinstance(step, Compute):
            lines.append(f"  [{n}] PYU({step.party})  on its aligned rows of {step.rel} -> {step.out}")
            lines.append(f"        {step.sql}")
        elif isinstance(step, Reveal):
            target = "kept (issuer's own)" if step.party == step.to else f"reveal to {step.to}"
            lines.append(f"  [{n}] {step.party} -> {step.to}  {target}: {step.name}")
        elif isinstance(step, HEGroupBy):
            sums = ", ".join(f"{kind.upper()}(v{j}) -> {name}" for name, kind, j in step.sums)
            lines.append(f"  [{n}] {step.device}  Paillier-{step.key_bits} group sums on {step.rel} -> {step.out}")
            lines.append(f"        groups at {step.key_party}: {step.groups_sql}")
            lines.append(f"        values at {step.value_party}: {step.values_sql}")
            lines.append(f"        {sums}; kept groups opened at {step.issuer}")
        elif isinstance(step, SecureStage):
            source = step.rel or " and ".join(rel for _, rel, _ in step.secret_join) or \
                " + ".join(rel for _, rel in step.union)
            lines.append(f"  [{n}] {step.device}  secret-shared (Z_2^64, Beaver triples from the dealer) on {source}"
                         f" -> {step.out}")
            if step.secret_join:
                (a, ra, ka), (b, rb, kb) = step.secret_join
                lines.append(f"        oblivious join {ra}.({', '.join(ka)}) = {rb}.({', '.join(kb)}) on shares: "
                             "a sorting network over both sides' rows and keys, the match bit kept secret")
            if step.filters:
                lines.append(f"        WHERE {' AND '.join(step.filters)}")
            if step.group_by and step.one_hot_groups:
                lines.append(f"        GROUP BY {', '.join(step.group_by)} (no sort: one-hot group sums, 1 round; "
                             f"at most {step.one_hot_groups:,} groups by the keys' published classes, "
                             f"{step.one_hot_groups:,} shared group rows before the compaction)")
            elif step.group_by:
                lines.append(f"        GROUP BY {', '.join(step.group_by)} (oblivious sort)")
            lines.append(f"        SELECT {', '.join(f'{sql} AS {name}' for name, sql in step.outputs)}")
            if step.order:
                lines.append(f"        ORDER BY outputs {', '.join(str(i) for i, _, _ in step.order)} (oblivious sort)"
                             + (f" LIMIT {step.limit}" if step.limit is not None else ""))
            lines.append(f"        opened to {step.issuer} only")
            lines.append(f"        estimate: {_spu_estimate(step)}")
        elif isinstance(step, SecretQuery):
            lines.append(f"  [{n}] {step.device}  secret program (Z_2^64 shares, a validity bit per row) -> {step.out}")
            lines += [f"        {line}" for line in program_lines(step)]
            lines += [f"        {line}" for line in noise_lines(step)]
            lines.append(f"        reveal: the valid rows of the root, opened to {step.issuer} only")
        elif isinstance(step, EnclaveStage):
            lines.append(f"  [{n}] {step.device}  oblivious sort / group-by on {step.rel} -> {step.out}")
            lines.append(f"        program: {step.program}")
            lines.append(f"        measurement accepted by the parties: {', '.join(m[:16] + '…' for m in step.measurements)}")
            if step.simulated:
                lines.append("        SIMULATION: no SGX on this machine; the quote is signed by a local test authority")
        elif isinstance(step, Noise):
            lines.append(f"  [{n}] PYU({step.party})  differential-privacy noise ({step.release.noise}) on {step.name}")
        elif isinstance(step, Mask):
            cols = ", ".join(f"{c}: {m.describe()}" for c, m in step.columns)
            lines.append(f"  [{n}] PYU({step.party})  mask {step.name} ({cols})")
        elif isinstance(step, Finish):
            lines.append(f"  [{n}] PYU({step.issuer})  finish ({step.mode}) over revealed parts")
            if step.sql:
                lines.append(f"        {step.sql}")
    moves = [m for step in phys.steps for m in _movements(step)]
    lines += ["", "between parties:"] + [f"  {m}" for m in (moves or ["nothing (single-party query at the issuer)"])]
    lines += ["", "what each party learns:"]
    learned = phys.leakage or ((phys.issuer, "the query result (its own data)"),)
    lines += [f"  {party}: {what}" for party, what in learned]
    lines += [f"  {line}" for step in phys.steps for line in text_width_lines(step)]
    lines += [f"  {line}" for step in phys.steps for line in magnitude_lines(step)]
    others = sorted(phys.parties - {p for p, _ in learned})
    lines += [f"  {party}: nothing" for party in others]
    if phys.min_group_size:
        lines += [""] + _threshold_lines(phys)
    if phys.notes:
        lines += [""] + list(phys.notes)
    if plan.visibility:
        lines += ["", "column control (what each party may learn of each output column):"]
        lines += [f"  {name}: " + ", ".join(f"{p} {c}" for p, c in vis) for name, vis in plan.visibility]
    if phys.uses:
        lines += ["", "grants used:"] + [f"  {u}" for u in phys.uses]
    return "\n".join(lines)


def _shared_columns(step: SecureStage, party: str) -> int:
    """How many columns `party` shares into the stage: its own inputs, or in UNION ALL mode every input
    column for each of its branches."""
    if step.union:
        return len(step.inputs) * sum(1 for owner, _ in step.union if owner == party)
    return sum(1 for owner, _ in step.inputs if owner == party)
