"""The package's public API: everything ``__all__`` names exists, the calls take the
server first, and per-file statuses are a typed enum."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import xnat_downloader
from xnat_downloader import Status


def test_every_name_in_all_resolves_and_the_entry_points_are_there() -> None:
    for name in xnat_downloader.__all__:
        assert getattr(xnat_downloader, name) is not None, name
    entry_points = {"download", "plan", "ls", "list_projects", "upload", "upload_subjects",
                    "create_project", "dicom_send", "prepare_array", "copy", "verify",
                    "session_workflows"}  # fmt: skip
    assert entry_points <= set(xnat_downloader.__all__)
    assert sorted(xnat_downloader.__all__) == xnat_downloader.__all__


def test_every_error_of_the_tree_can_be_caught_from_the_package() -> None:
    """A caller catches what the API raises by the names the package gives: every class of
    the one exception tree is exported."""
    from xnat_downloader import errors

    tree = {
        name
        for name, kind in vars(errors).items()
        if isinstance(kind, type) and issubclass(kind, errors.XnatError)
    }
    assert tree <= set(xnat_downloader.__all__), tree - set(xnat_downloader.__all__)


def test_the_server_comes_first() -> None:
    for name in ("download", "plan", "ls", "list_projects", "upload", "upload_subjects",
                 "create_project", "prepare_array", "session_workflows"):  # fmt: skip
        first = next(iter(inspect.signature(getattr(xnat_downloader, name)).parameters))
        assert first in ("url", "conn"), (name, first)
    # A copy has two: the server it reads first, then the one it writes.
    assert list(inspect.signature(xnat_downloader.copy).parameters)[:2] == ["source", "target"]


def test_statuses_are_an_enum_that_reads_as_plain_words() -> None:
    assert {s.value for s in Status} == {"verified", "skipped", "sent", "failed"}
    assert Status.FAILED == "failed"
    assert json.dumps({"status": Status.VERIFIED}) == '{"status": "verified"}'


def test_importing_the_package_does_not_load_dicom_libraries() -> None:
    probe = "import sys, xnat_downloader; print('pydicom' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "False"
