"""minixnat's HTTP side: an ASGI app speaking XNAT 1.8's REST API."""
