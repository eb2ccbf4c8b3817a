"""xnat-downloader: parallel, resumable, verified transfers out of and into XNAT."""

__version__ = "0.1.0"
