"""Scheduled work: the scheduler and what it sends (reminders, re-engagement, broadcasts), rates.
May import hub.pipeline (to send), the top modules, crm_store, bots, channels.base; no web, cli."""
