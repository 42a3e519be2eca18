"""Alpaca (alpaca-py): config, HTTP transport, pure parsing of its JSON, and the broker adapter."""
