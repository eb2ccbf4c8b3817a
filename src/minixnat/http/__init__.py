"""HTTP primitives below both faces of the server: the REST API (``rest``) and the pages.

``messages``: requests, responses and the XNAT-style error page; ``access``: permissions.
"""
