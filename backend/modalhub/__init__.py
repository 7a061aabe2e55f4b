"""modalhub: the webhook hub for long-running Modal GPU jobs."""

__version__ = "0.1.0"
