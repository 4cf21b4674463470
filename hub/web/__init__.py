"""The HTTP surface: the aiohttp app, sign-in and roles, the staff API, pages, charts, OpenAPI, ui/.
May import hub.pipeline, hub.jobs and the top modules, crm_store, bots, channels; never hub.cli."""
