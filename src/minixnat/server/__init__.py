"""The server: composes the REST API (``rest``) and the pages (``pages``) into one ASGI app.

``app`` routes a request, ``auth`` says who sent it, ``faults`` holds the fault switches and
``accesslog`` writes one line per request.
"""
