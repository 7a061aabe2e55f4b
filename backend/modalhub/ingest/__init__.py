"""Callback ingestion: verify, store before ack, hand over to processing."""
