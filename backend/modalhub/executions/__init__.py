"""Executions: where jobs run (Modal, or the local executor) and how the hub asks them."""
