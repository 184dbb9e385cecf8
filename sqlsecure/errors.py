"""One error tree, rooted at the PEP 249 classes.

Engine errors subclass the PEP 249 class a DB-API user would catch:

    Error
    ├── InterfaceError
    │   └── ConfigError        the federation file is wrong
    └── DatabaseError
        ├── OperationalError
        │   └── ProtocolError   a secure protocol or a channel failed (a party vanished, bad message)
        ├── ProgrammingError
        │   ├── PlanError       the query cannot be planned (syntax, unknown party/table/column)
        │   └── PolicyViolation the grants do not allow what the query would reveal
        ├── NotSupportedError   valid SQL that the engine cannot yet answer securely
        ├── DataError, IntegrityError, InternalError
"""

from __future__ import annotations


class Warning(Exception):  # noqa: A001 - PEP 249 name
    """PEP 249 warning."""


class Error(Exception):
    """Root of every error the engine raises."""


class InterfaceError(Error):
    """Misuse of the driver interface (closed cursor, fetch before execute...)."""


class DatabaseError(Error):
    """An error of the engine itself."""


class DataError(DatabaseError):
    """A value could not be processed (overflow, bad encoding)."""


class OperationalError(DatabaseError):
    """The engine could not run the query for a reason outside the query text."""


class IntegrityError(DatabaseError):
    """Relational integrity would be broken."""


class InternalError(DatabaseError):
    """The engine reached a state it should never reach: a bug."""


class ProgrammingError(DatabaseError):
    """The query or the call is wrong."""


class NotSupportedError(DatabaseError):
    """Valid SQL that the engine cannot (yet) answer securely; it is refused, never answered insecurely."""


class ConfigError(InterfaceError):
    """The federation file is invalid; the message lists every problem with its file and key."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("invalid federation:\n  " + "\n  ".join(self.problems))


class PlanError(ProgrammingError):
    """The query cannot be planned: syntax error, unknown party, table or column, unsupported statement."""


class PolicyViolation(ProgrammingError):
    """The grants do not allow what the query would reveal or compute; names the column, party and rule."""


class ProtocolError(OperationalError):
    """A secure protocol failed: a party did not answer in time, or a message was malformed."""


def innermost_place(exc: BaseException) -> str:
    """`file.py:function` where an exception was raised, for a bug report without its (maybe secret) text."""
    frame = exc.__traceback__
    if frame is None:
        return "?"
    while frame.tb_next is not None:
        frame = frame.tb_next
    code = frame.tb_frame.f_code
    return f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}"


def unexpected(exc: BaseException, doing: str) -> Error:
    """The PEP 249 error for an exception no code expected, at a public entry point (safety net).

    An OS error (a file, a socket) is an OperationalError naming the file; anything else is a bug, an
    InternalError naming its class and place but not its text, which may carry a data value."""
    if isinstance(exc, Error):
        return exc
    if isinstance(exc, OSError):
        target = f" {exc.filename}" if exc.filename else ""
        return OperationalError(f"{doing}:{target} {exc.strerror or type(exc).__name__}")
    return InternalError(f"internal error ({type(exc).__name__} in {innermost_place(exc)}) while {doing}: "
                         "this is a bug, please report the query")
