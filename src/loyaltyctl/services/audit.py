"""The audit trail: one row per data-changing command, personal data redacted."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from loyaltyctl.db.models import AuditRow
from loyaltyctl.pii import redact
from loyaltyctl.timeutil import utcnow


def record(
    *,
    session: Session,
    actor: str,
    command: str,
    target: str | None = None,
    rows: int = 0,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditRow:
    row = AuditRow(
        at=at or utcnow(),
        actor=actor[:64],
        command=command[:64],
        target=target,
        rows=rows,
        details=json.dumps(redact(details or {}), default=str, ensure_ascii=False, sort_keys=True),
    )
    session.add(row)
    return row


def list_rows(
    *,
    session: Session,
    actor: str | None = None,
    command: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    q = select(AuditRow)
    if actor:
        q = q.where(AuditRow.actor == actor)
    if command:
        q = q.where(col(AuditRow.command).like(f"{command}%"))
    if target:
        q = q.where(AuditRow.target == target)
    if since:
        q = q.where(AuditRow.at >= since)
    if until:
        q = q.where(AuditRow.at <= until)
    q = q.order_by(col(AuditRow.id).desc()).offset(offset).limit(limit)
    return [
        {
            "id": r.id,
            "at": r.at,
            "actor": r.actor,
            "command": r.command,
            "target": r.target,
            "rows": r.rows,
            "details": json.loads(r.details),
        }
        for r in session.exec(q)
    ]
