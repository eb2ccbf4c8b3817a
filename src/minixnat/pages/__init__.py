"""minixnat's web pages: server-rendered HTML for browsers.

``site`` routes ``/`` and ``/app/…`` and handles logging in; ``browse`` is the project →
subject → session browser and a session's file manager; ``download`` is seed 000's download
page (``choices`` holds its pure decisions); ``render`` holds templates and responses.
The pages read the store directly and reuse the API's access rules and download catalogs.
"""
