"""The hub: wires channels, the CRM store and the bots together, in rooms (docs/architecture.md):
pipeline/, web/, jobs/, cli/, eval/, beside the top modules every room sees (messages, config)."""
