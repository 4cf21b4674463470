"""Local fake provider servers spoken to over real HTTP by the real client libraries."""
