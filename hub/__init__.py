"""The hub: wires channels, the CRM store and the bots together."""
