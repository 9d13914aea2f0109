"""Mithril: catalog, bid planning, startup script, status and error mapping, volumes."""
