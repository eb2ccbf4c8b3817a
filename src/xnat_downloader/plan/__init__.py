"""Plan and layout: pure functions from remote files to local paths and a manifest."""
