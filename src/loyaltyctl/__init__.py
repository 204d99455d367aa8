"""loyaltyctl: administration toolkit for a customer loyalty program."""

__version__ = "0.1.0"
