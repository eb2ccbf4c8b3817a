"""The import service's machinery: unpack an upload safely, read DICOM headers, build
sessions, and commit them to the archive or the prearchive (``xnat-rest-api.md`` §9.3)."""
