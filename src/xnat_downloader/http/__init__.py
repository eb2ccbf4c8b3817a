"""Transport: HTTP session, authentication, credentials and retry policy.  Knows nothing of
XNAT's data model or of local files."""
