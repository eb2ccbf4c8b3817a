"""XNAT domain: the data model, listing parsers, selections and the catalog walker.
Knows XNAT's REST API and data model; knows nothing of local files."""
