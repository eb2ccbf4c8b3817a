"""The command line: translates options into one API call and renders the result."""
