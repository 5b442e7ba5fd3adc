"""Adapters: the runtime's SQL. Nothing here decides; it loads, locks and writes."""
