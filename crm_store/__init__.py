"""The CRM: tables, queries and domain operations. No HTTP, no Redis."""
