"""Masking and redaction of personal data (phone, e-mail, birth date, name)."""

from __future__ import annotations

from typing import Any

PII_FIELDS = ("phone", "email", "birth_date", "name")


def mask_phone(phone: str | None) -> str:
    if not phone:
        return ""
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:-7] + "***" + phone[-4:]


def mask_email(email: str | None) -> str:
    if not email:
        return ""
    local, _, domain = email.partition("@")
    return (local[:1] + "***@" + domain) if domain else "***"


def mask_date(value: Any) -> str:
    return "****-**-**" if value else ""


def mask_record(record: dict[str, Any]) -> dict[str, Any]:
    """Mask contact data and birth date for display (names stay: staff need them)."""
    out = dict(record)
    if "phone" in out:
        out["phone"] = mask_phone(out["phone"])
    if "email" in out:
        out["email"] = mask_email(out["email"])
    if "birth_date" in out:
        out["birth_date"] = mask_date(out["birth_date"])
    return out


def redact(details: Any) -> Any:
    """Remove personal data entirely, for audit rows that outlive the member."""
    if isinstance(details, dict):
        return {
            k: ("[redacted]" if k in PII_FIELDS and v not in (None, "") else redact(v))
            for k, v in details.items()
        }
    if isinstance(details, list):
        return [redact(v) for v in details]
    return details
