"""Policy: what each party may learn, and the protections on top of the grants.

Modules:
  grants   the column-control vocabulary (SCQL CCL constraints), grants and their uses
  rules    analysis rules per table (aggregation rules in the style of AWS Clean Rooms)
  masking  masks applied by a column's owner before a value is revealed
  privacy  differential privacy: noise specifications, releases, per-issuer budgets
  ledger   the durable privacy-budget ledger, charged before a result is released
"""
