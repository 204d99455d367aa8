"""Options shared by many commands (Annotated aliases, so each command reads the same)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class Fmt(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


FormatOpt = Annotated[
    Optional[Fmt],  # noqa: UP007 - Typer reads Optional
    typer.Option("--format", "-f", help="Output format (default: the global --format).",
                 show_default=False),
]
OutputOpt = Annotated[
    Optional[Path],  # noqa: UP007
    typer.Option("--output", "-o", help="Write the data to this file instead of stdout.",
                 dir_okay=False),
]
ShowPiiOpt = Annotated[
    bool, typer.Option("--show-pii", help="Show phone, e-mail and birth date unmasked (audited).")
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Check and report; change nothing.")]
