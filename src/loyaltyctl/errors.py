"""Domain exceptions, each carrying the exit code documented in product.md.

The CLI root turns any `LoyaltyError` into a one-line message on stderr and its exit code;
services raise them and never print.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    NOT_FOUND = 3
    INVALID_INPUT = 4
    REFUSED = 5
    BUSY = 6


class LoyaltyError(Exception):
    """Base class: a message for the user and the exit code to leave with."""

    exit_code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class UsageError(LoyaltyError):
    exit_code = ExitCode.USAGE


class NotFound(LoyaltyError):
    exit_code = ExitCode.NOT_FOUND


class InvalidInput(LoyaltyError):
    exit_code = ExitCode.INVALID_INPUT


class ConfigError(InvalidInput):
    """A problem in a TOML rules file: always names the file and the key path."""

    def __init__(self, path: object, key: str | None, reason: str) -> None:
        where = f"{path}" + (f": {key}" if key else "")
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason


class Refused(LoyaltyError):
    """A business rule said no: short balance, suspended member, duplicate reference."""

    exit_code = ExitCode.REFUSED


class DatabaseBusy(LoyaltyError):
    exit_code = ExitCode.BUSY


class SchemaOutdated(LoyaltyError):
    exit_code = ExitCode.UNEXPECTED
