"""The AI administrator. It changes the CRM only through the tools the hub hands it."""
