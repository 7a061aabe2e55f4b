"""Telling subscribers (a job's notify_url) that a job ended."""
