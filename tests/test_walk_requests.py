"""How the planner asks a server: which listings it asks for, and which at once.

An aiohttp app in this process plays the server.  "At once" is observed from the server's
side without timings: each listing of a pair waits (up to a generous limit) for the other
to arrive, so a planner that asks one after the other gets an error for the first and the
test fails on the gap it records.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from xnat_downloader.http.client import XnatClient
from xnat_downloader.http.credentials import Credentials
from xnat_downloader.xnat.paths import LOGIN
from xnat_downloader.xnat.selection import Selection
from xnat_downloader.xnat.walk import WalkResult, walk

PAIR_WAIT = 10.0  # seconds; only reached when the planner does not ask at once


def rows(*items: dict[str, str]) -> web.Response:
    return web.json_response({"ResultSet": {"Result": list(items)}})


class Rendezvous:
    """Two requests that each wait for the other: both answer only if they overlap."""

    def __init__(self) -> None:
        self.arrived: dict[str, asyncio.Event] = {}

    def event(self, name: str) -> asyncio.Event:
        return self.arrived.setdefault(name, asyncio.Event())

    async def meet(self, mine: str, other: str) -> bool:
        self.event(mine).set()
        try:
            await asyncio.wait_for(self.event(other).wait(), PAIR_WAIT)
        except TimeoutError:
            return False
        return True


def app_for(sessions: list[str], rendezvous: Rendezvous | None, seen: Counter[str]) -> Any:
    async def meet_or_fail(request: web.Request, mine: str, other: str) -> web.Response | None:
        if rendezvous is not None and not await rendezvous.meet(mine, other):
            # 400: an answer the client does not retry, so such a planner fails at once.
            return web.Response(status=400, text=f"{mine} was asked for without {other}")
        return None

    async def projects(request: web.Request) -> web.Response:
        seen["projects"] += 1
        return rows({"ID": "P", "name": "P"})

    async def subjects(request: web.Request) -> web.Response:
        seen["subjects"] += 1
        failed = await meet_or_fail(request, "subjects", "experiments")
        return failed or rows({"ID": "S1", "label": "s1"})

    async def experiments(request: web.Request) -> web.Response:
        seen["experiments"] += 1
        failed = await meet_or_fail(request, "experiments", "subjects")
        return failed or rows(
            *({"ID": e, "label": e, "subject_ID": "S1", "xsiType": "xnat:mrSessionData"}
              for e in sessions)
        )  # fmt: skip

    async def scans(request: web.Request) -> web.Response:
        eid = request.match_info["eid"]
        seen[f"scans {eid}"] += 1
        failed = await meet_or_fail(request, f"scans {eid}", f"files {eid}")
        return failed or rows({"ID": "1", "type": "T1w", "quality": "usable"})

    async def files(request: web.Request) -> web.Response:
        eid = request.match_info["eid"]
        seen[f"files {eid}"] += 1
        failed = await meet_or_fail(request, f"files {eid}", f"scans {eid}")
        uri = f"/data/experiments/{eid}/scans/1/resources/DICOM/files/a.dcm"
        return failed or rows(
            {"Name": "a.dcm", "Size": "3", "URI": uri, "collection": "DICOM",
             "digest": "900150983cd24fb0d6963f7d28e17f72"}
        )  # fmt: skip

    return listing_app(projects, subjects, experiments, scans, files)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def listing_app(
    projects: Handler, subjects: Handler, experiments: Handler, scans: Handler, files: Handler
) -> web.Application:
    """The five listings a walk of project P asks for, answered by the handlers given."""
    app = web.Application()
    app.router.add_get("/data/projects", projects)
    app.router.add_get("/data/projects/P/subjects", subjects)
    app.router.add_get("/data/projects/P/experiments", experiments)
    app.router.add_get("/data/experiments/{eid}/scans", scans)
    app.router.add_get("/data/experiments/{eid}/scans/ALL/files", files)
    return app


def walked(app: Any, selection: Selection) -> WalkResult:
    async def go() -> WalkResult:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            async with XnatClient(
                str(server.make_url("")), Credentials(None), login_path=LOGIN
            ) as xs:
                return await walk(xs, selection)
        finally:
            await server.close()

    return asyncio.run(go())


def test_independent_listings_are_asked_for_at_once() -> None:
    """A project's subjects and sessions, and each session's scans and scan files, are
    asked for together: a session costs one round trip to a distant server, not two."""
    seen: Counter[str] = Counter()
    found = walked(app_for(["E1", "E2"], Rendezvous(), seen), Selection(projects=("P",)))
    assert found.gaps == []
    assert sorted(f.uri.rsplit("/", 1)[1] for f in found.files) == ["a.dcm", "a.dcm"]
    assert {f.subject_label for f in found.files} == {"s1"}
    assert seen == Counter({"projects": 1, "subjects": 1, "experiments": 1, "scans E1": 1,
                            "files E1": 1, "scans E2": 1, "files E2": 1})  # fmt: skip


def test_a_scan_filter_asks_for_files_only_where_a_scan_matches() -> None:
    """With a scan type to match, a session's files are asked for only once its scan
    listing shows a match: no listing is fetched for nothing."""
    seen: Counter[str] = Counter()
    found = walked(app_for(["E1"], None, seen), Selection(projects=("P",), scan_types=("DWI",)))
    assert found.files == []
    assert found.gaps == []
    assert seen["scans E1"] == 1
    assert seen["files E1"] == 0
    found = walked(app_for(["E1"], None, seen), Selection(projects=("P",), scan_types=("T1*",)))
    assert len(found.files) == 1
    assert seen["files E1"] == 1


def test_rows_the_walk_cannot_use_are_gaps_that_name_their_session() -> None:
    """A session or scan row without an ID, and a file of a scan that the scan listing
    does not name (a scan added between the two listings, or a confused server), are each
    a gap: counted as failed, never skipped; those inside a session name it, so that an
    unchanged re-run lists the session again instead of reusing an incomplete record."""

    async def projects(request: web.Request) -> web.Response:
        return rows({"ID": "P", "name": "P"})

    async def subjects(request: web.Request) -> web.Response:
        return rows({"ID": "S1", "label": "s1"})

    async def experiments(request: web.Request) -> web.Response:
        return rows({"ID": "E1", "label": "mr1", "subject_ID": "S1"}, {"label": "mr2"})

    async def scans(request: web.Request) -> web.Response:
        return rows({"ID": "1", "type": "T1w"}, {"type": "DWI"})

    async def files(request: web.Request) -> web.Response:
        def row(scan: str) -> dict[str, str]:
            uri = f"/data/experiments/E1/scans/{scan}/resources/DICOM/files/{scan}.dcm"
            return {"Name": f"{scan}.dcm", "Size": "3", "URI": uri, "collection": "DICOM"}

        return rows(row("1"), row("2"))

    found = walked(
        listing_app(projects, subjects, experiments, scans, files), Selection(projects=("P",))
    )
    assert [f.uri.rsplit("/", 1)[1] for f in found.files] == ["1.dcm"]
    gaps = {(g.what, g.session_id): g.reason for g in found.gaps}
    assert gaps == {
        ("a session of project P (mr2)", ""): "the server's session listing gives it no ID",
        ("a scan of session mr1 (DWI)", "E1"): "the server's scan listing gives it no ID",
        ("/data/experiments/E1/scans/2/resources/DICOM/files/2.dcm", "E1"): (
            "the scan listing of session mr1 names no scan 2; run again to fetch it"
        ),
    }


def test_sessions_are_picked_by_the_day_they_were_added() -> None:
    """--added-since/--added-until read the experiments listing's insert_date (asked for in
    the one listing): a session scanned long ago but added yesterday is new."""

    async def projects(request: web.Request) -> web.Response:
        return rows({"ID": "P", "name": "P"})

    async def subjects(request: web.Request) -> web.Response:
        return rows({"ID": "S1", "label": "s1"})

    asked: list[str] = []

    async def experiments(request: web.Request) -> web.Response:
        asked.append(request.query.get("columns", ""))
        return rows(
            {"ID": "OLD", "label": "old", "subject_ID": "S1", "date": "2001-01-01",
             "insert_date": "2024-03-01 10:00:00.0"},
            {"ID": "NEW", "label": "new", "subject_ID": "S1", "date": "1999-01-01",
             "insert_date": "2025-06-30 23:59:59.9"},
            {"ID": "NONE", "label": "none", "subject_ID": "S1", "date": "2025-07-01"},
        )  # fmt: skip

    async def scans(request: web.Request) -> web.Response:
        return rows()

    async def files(request: web.Request) -> web.Response:
        return rows()

    def labels(**dates: date) -> list[str]:
        app = listing_app(projects, subjects, experiments, scans, files)
        return [s.label for s in walked(app, Selection(projects=("P",), **dates)).sessions]

    assert labels(added_since=date(2025, 6, 30)) == ["new"]
    assert labels(added_until=date(2025, 6, 29)) == ["old"]
    assert labels(added_since=date(2024, 3, 1), added_until=date(2025, 6, 30)) == ["old", "new"]
    assert labels() == ["old", "new", "none"]  # no constraint: a session without one stays
    assert all("insert_date" in columns.split(",") for columns in asked)
