"""minixnat's DICOM side: the C-STORE receiver, its spool, routing and study builder."""
