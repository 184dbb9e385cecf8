"""Flight SQL commands on the wire: `google.protobuf.Any`-wrapped messages of FlightSql.proto.

Every Flight SQL request rides in an opaque byte field of a plain Flight call (a descriptor's
command, a ticket, an action body) as a serialized `Any`; its type URL names the message.
`unpack` turns those bytes back into the message, `pack` does the reverse.

`FlightSql_pb2` is generated from the Arrow project's `format/FlightSql.proto` (shipped next to it,
with its license header); see the header of `FlightSql_pb2.py` for the command that regenerates it.
"""

from __future__ import annotations

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from sqlsecure.flight_sql import FlightSql_pb2 as pb

PACKAGE = "arrow.flight.protocol.sql"

# The messages this server understands, by full protobuf name.
MESSAGES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        pb.CommandStatementQuery, pb.TicketStatementQuery, pb.CommandPreparedStatementQuery,
        pb.CommandGetSqlInfo, pb.CommandGetCatalogs, pb.CommandGetDbSchemas, pb.CommandGetTables,
        pb.CommandGetTableTypes, pb.ActionCreatePreparedStatementRequest, pb.ActionClosePreparedStatementRequest,
    )
}

# Flight SQL's action types (DoAction), as clients send them.
CREATE_PREPARED_STATEMENT = "CreatePreparedStatement"
CLOSE_PREPARED_STATEMENT = "ClosePreparedStatement"


class CommandError(ValueError):
    """The bytes are not a Flight SQL message this server understands; the message says which."""


def pack(message: Message) -> bytes:
    """Serialize `message` wrapped in an `Any` (type URL `type.googleapis.com/arrow.flight.protocol.sql.X`)."""
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped.SerializeToString()


def type_name(data: bytes) -> str:
    """The full message name inside an `Any`, e.g. `arrow.flight.protocol.sql.CommandStatementUpdate`."""
    wrapped = any_pb2.Any()
    try:
        wrapped.ParseFromString(data)
    except DecodeError:
        raise CommandError("the request is not a Flight SQL command (not a serialized google.protobuf.Any)") from None
    if not wrapped.type_url:
        raise CommandError("the request is not a Flight SQL command (empty google.protobuf.Any)")
    return wrapped.TypeName()


def unpack(data: bytes, *expected: type[Message]) -> Message:
    """Decode an `Any`-wrapped Flight SQL message; with `expected`, only those message types are accepted."""
    name = type_name(data)
    cls = MESSAGES.get(name)
    if cls is None or (expected and cls not in expected):
        short = name.removeprefix(PACKAGE + ".")
        raise CommandError(f"{short} is not supported here (sqlsecure serves read-only queries and metadata)")
    wrapped = any_pb2.Any()
    wrapped.ParseFromString(data)
    message = cls()
    try:
        unpacked = wrapped.Unpack(message)
    except DecodeError:
        unpacked = False
    if not unpacked:
        raise CommandError(f"malformed {name.removeprefix(PACKAGE + '.')}")
    return message
