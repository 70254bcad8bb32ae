"""dlpgate: an outbound email data-loss-prevention gateway."""

__version__ = "0.1.0"
