"""Transfer engine: concurrency, resume, verification and progress events.  Knows nothing of
XNAT's data model beyond a URI, a size, a digest and a local path."""
