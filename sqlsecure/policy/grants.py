"""Column control: what each party may learn of each column (SCQL 1.x CCL vocabulary).

A grant gives one party one constraint on a set of columns. The owner of a column always has
PLAINTEXT; a column with no grant for a party is ENCRYPTED_ONLY to it. `Grants.allows` answers
whether a party may learn a column in a given *use* (revealed as is, inside an aggregate, as a
group key, through a comparison, as a join key, through its rank).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Constraint(enum.Enum):
    PLAINTEXT = "PLAINTEXT"
    PLAINTEXT_AFTER_JOIN = "PLAINTEXT_AFTER_JOIN"
    PLAINTEXT_AS_JOIN_PAYLOAD = "PLAINTEXT_AS_JOIN_PAYLOAD"
    PLAINTEXT_AFTER_GROUP_BY = "PLAINTEXT_AFTER_GROUP_BY"
    PLAINTEXT_AFTER_AGGREGATE = "PLAINTEXT_AFTER_AGGREGATE"
    PLAINTEXT_AFTER_COMPARE = "PLAINTEXT_AFTER_COMPARE"
    REVEAL_RANK = "REVEAL_RANK"
    ENCRYPTED_ONLY = "ENCRYPTED_ONLY"


class Use(enum.Enum):
    """How a query makes a party learn something about a column."""

    REVEAL = "revealed as is"
    AGGREGATE = "revealed inside an aggregate"
    GROUP_KEY = "used as a GROUP BY key"
    COMPARE = "used in a comparison (WHERE/HAVING)"
    JOIN_KEY = "used as a join key (the peer learns the intersection)"
    RANK = "used in ORDER BY"


# For each use, the constraints that permit it (PLAINTEXT permits everything).
PERMITS: dict[Use, frozenset[Constraint]] = {
    Use.REVEAL: frozenset({Constraint.PLAINTEXT}),
    Use.AGGREGATE: frozenset({Constraint.PLAINTEXT, Constraint.PLAINTEXT_AFTER_AGGREGATE}),
    Use.GROUP_KEY: frozenset({Constraint.PLAINTEXT, Constraint.PLAINTEXT_AFTER_GROUP_BY}),
    Use.COMPARE: frozenset({Constraint.PLAINTEXT, Constraint.PLAINTEXT_AFTER_COMPARE}),
    Use.JOIN_KEY: frozenset({Constraint.PLAINTEXT, Constraint.PLAINTEXT_AFTER_JOIN}),
    Use.RANK: frozenset({Constraint.PLAINTEXT, Constraint.REVEAL_RANK}),
}


@dataclass(frozen=True)
class ColumnRef:
    """A federation column, `party.table.column`."""

    party: str
    table: str
    column: str

    def __str__(self) -> str:
        return f"{self.party}.{self.table}.{self.column}"


@dataclass
class Grants:
    """Resolved grants: (column, party) -> constraint."""

    table: dict[tuple[ColumnRef, str], Constraint] = field(default_factory=dict)

    def constraint(self, column: ColumnRef, party: str) -> Constraint:
        if party == column.party:
            return Constraint.PLAINTEXT
        return self.table.get((column, party), Constraint.ENCRYPTED_ONLY)

    def allows(self, column: ColumnRef, party: str, use: Use) -> bool:
        return self.constraint(column, party) in PERMITS[use]


@dataclass
class RevealPolicy:
    """Everything that decides what an issuer may learn: grants, analysis rules, masks, DP budgets."""

    grants: Grants
    rules: dict = field(default_factory=dict)  # (party, table) -> sqlsecure.policy.rules.TableRules
    masks: dict = field(default_factory=dict)  # (ColumnRef, recipient) -> sqlsecure.policy.masking.Mask
    budgets: dict = field(default_factory=dict)  # issuer -> sqlsecure.policy.privacy.PrivacyBudget
    min_group_size: int = 4
