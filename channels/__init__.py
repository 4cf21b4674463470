"""Channels: provider payloads in, provider calls out. They never touch the database."""
