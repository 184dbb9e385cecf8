"""An Arrow Flight SQL endpoint for dashboards and BI tools: one party's view of a federation.

    sqlsecure serve -F federation.toml --as bank --listen 127.0.0.1:32010 \\
        --tls-cert server.pem --tls-key server.key --password-file users.txt

`FlightSqlServer` (server.py) answers the Flight SQL calls that clients make (ADBC, JDBC, the Go
and C++ clients); `auth.py` checks who calls; `metadata.py` describes the federation; `protocol.py`
decodes the Flight SQL messages generated from Arrow's FlightSql.proto.
"""

from sqlsecure.flight_sql.auth import BearerTokens, Credentials
from sqlsecure.flight_sql.server import FlightSqlServer, flight_error

__all__ = ["BearerTokens", "Credentials", "FlightSqlServer", "flight_error"]
