"""Property and unit tests for the pure decisions: safe names, the plan's collision handling,
the list-file parser, xget's zip names, the resume decision and the retry policy."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xnat_downloader.api.xget import ZipNaming, group_by_zip, zip_name
from xnat_downloader.cli.common import redact
from xnat_downloader.cli.inputs import parse_choice, parse_xget_day, read_list_file
from xnat_downloader.errors import UsageError
from xnat_downloader.http.retry import RetryPolicy
from xnat_downloader.plan.layout import Layout, LayoutOptions
from xnat_downloader.plan.plan import Plan, PlanEntry, build_plan, load_manifest, manifest_json
from xnat_downloader.plan.sanitize import MAX_COMPONENT, safe_component, safe_relpath
from xnat_downloader.throttle import Throttle
from xnat_downloader.transfer.decide import Action, Facts, decide
from xnat_downloader.transfer.state import Record
from xnat_downloader.xnat.model import RemoteFile

RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(10)),
    *(f"LPT{i}" for i in range(10)),
}
# Names as hostile servers and careless scanners produce them.
nasty = st.text(
    alphabet=st.sampled_from(list('aA.. /\\:*?"<>|\x00\x1fCONnul1~é-_')), min_size=0, max_size=30
)


def is_safe(name: str) -> bool:
    return (
        bool(name)
        and name not in (".", "..")
        and not re.search(r'[<>:"/\\|?*\x00-\x1f\x7f]', name)
        and not name.endswith((".", " "))
        and len(name) <= MAX_COMPONENT
        and name.split(".", 1)[0].upper() not in RESERVED
    )


@given(nasty)
def test_safe_component_is_safe_and_stable(name: str) -> None:
    safe = safe_component(name)
    assert is_safe(safe), safe
    assert safe_component(safe) == safe


@given(st.lists(nasty, max_size=6).map("/".join))
def test_safe_relpath_never_escapes(path: str) -> None:
    parts = safe_relpath(path)
    assert parts
    assert all(is_safe(p) for p in parts)


def test_dicom_names_are_kept_byte_for_byte() -> None:
    for name in (
        "2.25.147667536669535793837708804930359515068.dcm",
        "1.3.12.2.1107.5.2",
        "T1w.nii.gz",
    ):
        assert safe_component(name) == name


def remote(path: str, owner: str = "1", resource: str = "DICOM", session: str = "S") -> RemoteFile:
    return RemoteFile(
        uri=f"/data/experiments/E/scans/{owner}/resources/{resource}/files/{path}",
        path=path,
        size=1,
        md5=None,
        project="P",
        subject_label="SUBJ",
        session_label=session,
        session_id="E",
        category="scan",
        resource=resource,
        owner=owner,
        owner_type="T1",
    )


file_lists = st.lists(
    st.builds(
        remote,
        st.lists(
            st.sampled_from(["a", "A", "b", "..", "a.dcm", "A.DCM", "c/d", "C"]),
            min_size=1,
            max_size=3,
        ).map("/".join),
        st.sampled_from(["1", "1 ", "2"]),
        st.sampled_from(["DICOM", "dicom", "NIFTI"]),
    ),
    max_size=25,
)


@settings(max_examples=200)
@given(file_lists, st.sampled_from(list(Layout)), st.booleans())
def test_plan_never_maps_two_files_to_one_path(
    files: list[RemoteFile], layout: Layout, subject: bool
) -> None:
    opts = LayoutOptions(layout, include_project=True, include_subject=subject)
    plan = build_plan(files, opts)
    locals_ = [e.local for e in plan.entries]
    folded = [p.casefold() for p in locals_]
    assert len(set(folded)) == len(folded)  # unique, even on a case-insensitive disk
    folders = {"/".join(p.split("/")[:i]) for p in folded for i in range(1, p.count("/") + 1)}
    assert not folders & set(folded)  # no file where another needs a folder
    assert sorted(e.file.uri for e in plan.entries) == sorted({f.uri for f in files})
    shuffled = list(files)
    random.Random(1).shuffle(shuffled)
    assert build_plan(shuffled, opts).entries == plan.entries  # the same on every run
    for e in plan.entries:
        assert all(is_safe(part) for part in e.local.split("/"))


def test_collision_gets_a_stable_suffix_and_is_reported() -> None:
    plan = build_plan([remote("x.dcm"), remote("X.dcm")], LayoutOptions())
    renamed = dict(plan.renamed)
    assert len(renamed) == 2
    assert all(re.search(r"~[0-9a-f]{8}\.dcm$", local) for local in renamed.values())


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}", fullmatch=True).filter(
    lambda s: s.lower() not in {"id", "label", "session", "subject", "project"}
)


@given(
    st.lists(ids, min_size=1, max_size=10),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["", ",x", "\tx"]),
)
def test_list_file_reads_back_what_was_written(
    values: list[str], bom: bool, crlf: bool, header: bool, extra: str
) -> None:
    end = "\r\n" if crlf else "\n"
    lines = (["session" + extra] if header else []) + [v + extra for v in values]
    text = end.join([*lines[:1], "", *lines[1:]]) + end  # a blank line inside
    path = Path(f"/tmp/xnatdl-list-{abs(hash(text))}.txt")
    try:
        path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
        assert read_list_file(path) == values
    finally:
        path.unlink(missing_ok=True)


def test_list_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_text("S1\nS2\nbad value\n")
    with pytest.raises(UsageError, match=r"line 3: 'bad value'"):
        read_list_file(path)
    path.write_text("label,date\n,2024-01-01\n")
    with pytest.raises(UsageError, match="line 2: the first column is empty"):
        read_list_file(path)
    path.write_text("# only a comment\n\n")
    with pytest.raises(UsageError, match="names nothing"):
        read_list_file(path)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_list_file(path)
    path.write_text("A,B\nC\n")
    assert read_list_file(path, comma_lists=True) == ["A", "B", "C"]


def test_chooser_answers() -> None:
    projects = ["P1", "P2", "P3"]
    assert parse_choice("1 3", projects) == ["P1", "P3"]
    assert parse_choice("P2 2", projects) == ["P2"]
    assert "not within 1-3" in str(parse_choice("4", projects))
    assert "not in the list" in str(parse_choice("P9", projects))
    assert "type numbers" in str(parse_choice("  ", projects))
    assert parse_choice("1,3", projects) == ["P1", "P3"]
    assert parse_choice("2-3", projects) == ["P2", "P3"]
    assert parse_choice("ALL", projects) == projects
    assert "not within 1-3" in str(parse_choice("2-5", projects))
    assert "not within 1-3" in str(parse_choice("3-2", projects))


def test_xget_dates() -> None:
    assert str(parse_xget_day("01012011", "-start")) == "2011-01-01"
    for bad in ("2011-01-01", "32012011", "1012011x"):
        with pytest.raises(UsageError, match="DDMMYYYY"):
            parse_xget_day(bad, "-start")


def test_xget_zip_names_and_clashes() -> None:
    assert zip_name("P", "sess_1", "acq", ZipNaming()) == "sess_1_acq.zip"
    long = ZipNaming(longname=True, acq=("1", "TSE"), quality=())
    assert (
        zip_name("proj_3", "sess_1", "ass", long)
        == "p_proj_3_sess_sess_1_ass_ALL_q_ALL_f_DICOM.zip"
    )
    assert (
        zip_name("proj_3", "sess_1", "acq", long)
        == "p_proj_3_sess_sess_1_acq_1_TSE_q_ALL_f_DICOM.zip"
    )
    same_label = [
        PlanEntry(
            RemoteFile("/u1", "a", 1, None, "P1", "S", "MR1", "E1", "scan", "DICOM", "1"), "MR1/a"
        ),
        PlanEntry(
            RemoteFile("/u2", "a", 1, None, "P2", "S", "MR1", "E2", "scan", "DICOM", "1"), "MR1/a"
        ),
        PlanEntry(RemoteFile("/u3", "b", 1, None, "P2", "S", "MR1", "E2", "session", "X"), "MR1/b"),
    ]
    groups = group_by_zip(same_label, ZipNaming())
    assert sorted(groups) == ["P1_MR1_acq.zip", "P2_MR1_acq.zip"]  # session resources: no zip


def test_password_values_are_redacted() -> None:
    shown = redact(
        ["xget", "-u", "me", "-p", "s3cret", "--password=s3cret", "-proj", "P"],
        ("-p", "--password"),
    )
    assert "s3cret" not in shown
    assert "-u me" in shown
    assert "-proj P" in shown


# -- the resume decision -------------------------------------------------------------------
sizes = st.one_of(st.none(), st.integers(0, 10**6))
md5s = st.one_of(st.none(), st.sampled_from(["a" * 32, "b" * 32]))
mtimes = st.one_of(st.none(), st.sampled_from([1, 2]))
records = st.one_of(
    st.none(),
    st.builds(
        Record,
        st.just("f"),
        st.just("u"),
        sizes,
        md5s,
        st.sampled_from(["verified", "partial"]),
        mtimes,
    ),
)
facts = st.builds(Facts, sizes, md5s, records, sizes, sizes, st.booleans(), mtimes, st.booleans())


@settings(max_examples=500)
@given(facts)
def test_decide_properties(f: Facts) -> None:
    action, offset = decide(f)
    if f.overwrite:
        assert action == Action.DOWNLOAD
    if action == Action.SKIP:
        # Only our own verified file, unchanged on the server and on disk, is skipped.
        assert f.final_size is not None
        assert f.record is not None
        assert f.record.status == "verified"
        assert f.record.size == f.final_size
        # ... and only while its mtime is as recorded, and without --checksum.
        assert not f.checksum
        assert f.record.mtime_ns is None or f.record.mtime_ns == f.final_mtime_ns
        same_digest = bool(f.expected_md5 and f.record.md5 and f.expected_md5 == f.record.md5)
        assert same_digest or (f.expected_size is not None and f.record.size == f.expected_size)
        if f.expected_md5 and f.record.md5:
            assert same_digest
    if action == Action.RESUME:
        assert f.final_size is None
        assert f.record is not None
        assert f.record.status == "partial"
        assert offset == f.partial_size
        assert offset > 0
        assert f.expected_size is None or offset < f.expected_size
    else:
        assert offset == 0
    if action == Action.CHECK_EXISTING:
        # A file we did not verify is hashed, never trusted and never blindly replaced; so
        # is one of ours whose size or mtime moved since, or every one under --checksum.
        assert f.final_size is not None
        if f.record is not None and f.record.status == "verified":
            assert f.record.size == f.final_size  # a size that moved is fetched again
            assert f.checksum or f.record.mtime_ns not in (None, f.final_mtime_ns)
    if f.final_size is None:
        assert action in (Action.DOWNLOAD, Action.RESUME)


def test_decide_refetches_when_the_remote_digest_changed() -> None:
    record = Record("f", "u", 10, "a" * 32, "verified")
    assert decide(Facts(10, "b" * 32, record, 10, None, False))[0] == Action.DOWNLOAD
    assert decide(Facts(10, "a" * 32, record, 10, None, False))[0] == Action.SKIP
    assert decide(Facts(10, "a" * 32, record, 9, None, False))[0] == Action.DOWNLOAD


@given(st.integers(0, 20), st.sampled_from([None, 400, 401, 403, 404, 429, 500, 503]))
def test_retry_policy(attempt: int, status: int | None) -> None:
    policy = RetryPolicy(attempts=10, base=0.5, cap=30.0)
    delay = policy.delay(attempt, status=status, rng=random.Random(attempt))
    if attempt + 1 >= 10 or status in (400, 401, 403, 404):
        assert delay is None
    else:
        assert delay is not None
        assert 0 < delay <= 30.0
    assert policy.delay(0, status=503, retry_after="7") == 7.0


@given(
    st.lists(st.integers(1, 4_000_000), min_size=1, max_size=40), st.sampled_from([0.5e6, 1e6, 7e6])
)
def test_rate_limiter_holds_the_average_rate(chunks: list[int], rate: float) -> None:
    """Whatever the chunk sizes, n bytes take at least (n - rate) / rate seconds (one
    second's burst is allowed), and the limiter never sleeps more than it must."""
    now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        assert seconds > 0
        now[0] += seconds

    async def go() -> None:
        limiter = Throttle(rate, clock=lambda: now[0], sleep=fake_sleep)
        for chunk in chunks:
            await limiter.take(chunk)

    asyncio.run(go())
    total = sum(chunks)
    assert now[0] >= (total - rate) / rate - 1e-6
    assert now[0] <= max(0.0, (total - rate) / rate) + 1e-6


@settings(max_examples=50, deadline=None)
@given(names=st.lists(st.text(min_size=1, max_size=20), max_size=5), md5=st.none() | st.text())
def test_a_saved_manifest_reads_back_as_the_plan(
    names: list[str], md5: str | None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """One file to a line, any text in its fields (quotes, newlines, other scripts)."""
    plan = Plan([
        PlanEntry(RemoteFile(f"/data/x/files/{i}", name, i, md5, "P", "S", name, "E1",
                             "scan", "DICOM", str(i), name), f"P/{i}/f{i}")
        for i, name in enumerate(names)
    ])  # fmt: skip
    text = manifest_json(plan, "https://xnat.example.org")
    assert len(text.splitlines()) == (len(plan.entries) + 2 if plan.entries else 1)
    saved = tmp_path_factory.mktemp("manifest") / "manifest.json"
    saved.write_text(text, encoding="utf-8")
    assert load_manifest(saved) == ("https://xnat.example.org", plan)


def test_the_client_fetches_only_from_its_own_server() -> None:
    """A server path, or an absolute URL with the same scheme, host and port (the default
    port said or not), is fetched; any other absolute URL is refused (421), never fetched."""
    from xnat_downloader.errors import ServerError
    from xnat_downloader.http.client import XnatClient
    from xnat_downloader.http.credentials import Credentials

    client = XnatClient(
        "https://xnat.example.org/xnat", Credentials("u", "p"), login_path="/data/JSESSION"
    )
    assert client.url("/data/projects") == "https://xnat.example.org/xnat/data/projects"
    for same in ("https://xnat.example.org/xnat/data/x", "https://XNAT.example.org:443/y"):
        assert client.url(same) == same
    for other in (
        "http://xnat.example.org/xnat/data/x",  # another scheme
        "https://xnat.example.org:8443/xnat/data/x",  # another port
        "https://elsewhere.example.org/xnat/data/x",
        "https://xnat.example.org.evil.test/data/x",
    ):
        with pytest.raises(ServerError) as refused:
            client.url(other)
        assert refused.value.status == 421
        assert "another server" in str(refused.value)


def test_a_redirect_may_only_upgrade_the_same_host_to_https() -> None:
    from xnat_downloader.http.client import XnatClient
    from xnat_downloader.http.credentials import Credentials

    plain = XnatClient("http://xnat.example.org", Credentials("u", "p"), login_path="/x")
    assert plain._may_follow("http://xnat.example.org/data/x")
    assert plain._may_follow("https://xnat.example.org/data/x")  # the server wants TLS
    assert not plain._may_follow("https://other.example.org/data/x")
    assert not plain._may_follow("http://xnat.example.org:8080/data/x")
    tls = XnatClient("https://xnat.example.org", Credentials("u", "p"), login_path="/x")
    assert not tls._may_follow("http://xnat.example.org/data/x")  # never down to plain HTTP
