"""The interactive object editor: an ASGI app (app.make_app) and the single page it serves (static/)."""
