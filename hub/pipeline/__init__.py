"""The message pipeline: streams, consumers, leases, the router, the bot worker, replies, hand-off.
May import the top modules of hub, crm_store, bots, channels.base; never web, jobs, cli, state."""
