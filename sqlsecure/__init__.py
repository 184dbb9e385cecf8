"""sqlsecure: one SQL query over several parties' tables, answered without any party seeing another's rows."""

__version__ = "0.1.0"
