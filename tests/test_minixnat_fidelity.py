"""What pyxnat and xnatpy do beyond reading the archive, against minixnat (through the
``minixnat`` fixture of minixnat.testing), and the same over plain HTTP: resources by ID,
users and membership, project settings, fields set by PUT and read back."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pyxnat
import requests
import xnat
from lxml import etree

from minixnat.testing import MiniXnat
from tests.conftest import BIN

NS = {"xnat": "http://nrg.wustl.edu/xnat"}


def demographics(item: dict[str, Any]) -> dict[str, Any]:
    """The demographics child of a subject's JSON item, as XNAT nests it."""
    child = next(c for c in item["children"] if c["field"] == "demographics")
    fields: dict[str, Any] = child["items"][0]["data_fields"]
    return fields


def http(server: MiniXnat, method: str, path: str, **kw: object) -> requests.Response:
    kw.setdefault("auth", server.auth)
    return requests.request(method, server.url + path, timeout=30, **kw)  # type: ignore[arg-type]


def rows(server: MiniXnat, path: str, **kw: object) -> list[dict[str, str]]:
    answer = http(server, "GET", path, **kw)
    assert answer.status_code == 200, answer.text
    result: list[dict[str, str]] = answer.json()["ResultSet"]["Result"]
    return result


def test_resources_are_reached_by_numeric_id_for_writes(minixnat: MiniXnat, tmp_path: Path) -> None:
    http(minixnat, "PUT", "/data/projects/P")
    http(minixnat, "PUT", "/data/projects/P/subjects/S")
    base = "/data/projects/P/subjects/S/resources"
    assert http(minixnat, "PUT", f"{base}/NOTES/files/a.txt", data=b"one").ok
    rid = rows(minixnat, base)[0]["xnat_abstractresource_id"]
    assert http(minixnat, "PUT", f"{base}/{rid}/files/b.txt", data=b"two").ok
    assert [r["label"] for r in rows(minixnat, base)] == ["NOTES"]  # no resource named rid
    assert http(minixnat, "GET", f"{base}/NOTES/files/b.txt").content == b"two"
    assert http(minixnat, "DELETE", f"{base}/{rid}/files/a.txt").ok
    assert [r["Name"] for r in rows(minixnat, f"{base}/{rid}/files")] == ["b.txt"]
    assert http(minixnat, "PUT", f"{base}/{rid}").status_code == 409  # it exists
    # pyxnat: a file inserted through the resource's ID, then found at its listed URI.
    local = tmp_path / "c.txt"
    local.write_text("three")
    interface = pyxnat.Interface(minixnat.url, minixnat.user, minixnat.password)
    resource = interface.select(f"/projects/P/subjects/S/resources/{rid}")
    resource.file("c.txt").insert(str(local))
    assert resource.file("c.txt").exists()
    assert http(minixnat, "DELETE", f"{base}/{rid}").ok
    assert rows(minixnat, base) == []


def test_users_and_project_membership(minixnat: MiniXnat) -> None:
    from minixnat.store import Store

    store = Store(minixnat.root)
    store.add_user("mia", "pw", firstname="Mia", lastname="Wong", email="mia@example.org")
    store.add_user("cole", "pw")
    store.close()
    http(minixnat, "PUT", "/data/projects/P")
    users = {u["login"]: u for u in rows(minixnat, "/data/users")}
    assert users["mia"]["email"] == "mia@example.org"
    assert users["admin"]["xdat_user_id"] == "1"
    assert rows(minixnat, "/data/users/mia")[0]["lastname"] == "Wong"
    interface = pyxnat.Interface(minixnat.url, minixnat.user, minixnat.password)
    assert set(interface.manage.users()) == {"admin", "mia", "cole"}
    assert interface.manage.users.firstname("mia") == "Mia"
    project = interface.select.project("P")
    assert project.owners() == ["admin"]
    project.add_user("mia", "member")
    project.add_user("cole", "collaborator")
    assert project.members() == ["mia"]
    assert project.collaborators() == ["cole"]
    assert project.user_role("cole") == "collaborator"
    # A collaborator may not change membership; a member neither.
    for who in (("cole", "pw"), ("mia", "pw")):
        refused = http(minixnat, "PUT", "/data/projects/P/users/Owners/cole", auth=who)
        assert refused.status_code == 403
    project.remove_user("cole")
    assert "cole" not in project.users()
    assert http(minixnat, "DELETE", "/data/projects/P/users/Owners/mia").status_code == 404
    assert http(minixnat, "PUT", "/data/projects/P/users/Chiefs/mia").status_code == 404
    # Outsiders learn nothing about a private project's users.
    assert http(minixnat, "GET", "/data/projects/P/users", auth=("cole", "pw")).status_code == 404


def test_project_settings_are_stored(minixnat: MiniXnat) -> None:
    query = "?alias=PA&xnat:projectData/description=A%20study&xnat:projectData/name=Study"
    assert http(minixnat, "PUT", f"/data/projects/P{query}").ok
    assert http(minixnat, "PUT", "/data/projects/Q?alias=PA").status_code == 409
    interface = pyxnat.Interface(minixnat.url, minixnat.user, minixnat.password)
    project = interface.select.project("P")
    assert project.aliases() == ["PA"]
    assert project.description() == "A study"
    assert (
        http(minixnat, "GET", "/data/projects/PA?format=json").json()["items"][0]["data_fields"][
            "ID"
        ]
        == "P"
    )
    assert project.prearchive_code() == 4  # XNAT's default for a new project: archive
    # Each alias is a child of its own (XNAT keeps a row each), known by its value.
    document = http(minixnat, "GET", "/data/projects/P?format=json").json()["items"][0]
    aliases = [c for c in document["children"] if c["field"] == "aliases/alias"]
    assert [i["data_fields"]["alias"] for i in aliases[0]["items"]] == ["PA"]
    xml = http(minixnat, "GET", "/data/projects/P?format=xml").text
    assert "<xnat:aliases><xnat:alias>PA</xnat:alias></xnat:aliases>" in xml
    import xnat

    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as session:
        assert list(session.projects["P"].aliases) == ["PA"]
    project.set_prearchive_code("0")
    assert project.prearchive_code() == 0
    assert http(minixnat, "PUT", "/data/projects/P/prearchive_code/7").status_code == 400
    assert project.quarantine_code() == 0


def test_fields_set_by_put_come_back(minixnat: MiniXnat) -> None:
    interface = pyxnat.Interface(minixnat.url, minixnat.user, minixnat.password)
    http(minixnat, "PUT", "/data/projects/P")
    subject = interface.select.project("P").subject("S1")
    experiment = subject.experiment("E1")
    experiment.create(
        **{
            "experiment": "xnat:mrSessionData",
            "xnat:mrSessionData/age": "42",
            "xnat:subjectData/investigator/lastname": "doe",
            "xnat:subjectData/investigator/firstname": "john",
        }
    )
    assert experiment.attrs.get("xnat:mrSessionData/age") == "42.0"
    assert subject.attrs.mget(
        ["xnat:subjectData/investigator/firstname", "xnat:subjectData/investigator/lastname"]
    ) == ["john", "doe"]
    before = interface.select("/project/P").last_modified()
    subject.attrs.set("age", "26")
    assert subject.attrs.get("age") == "26"
    assert interface.select("/project/P").last_modified() != before
    scan = experiment.scan("1")
    scan.create(scans="xnat:mrScanData")
    scan.set_param("TR", "2.5")
    assert scan.get_param("TR") == "2.5"
    # In the documents: nested elements, demographics included.
    doc = etree.fromstring(http(minixnat, "GET", "/data/projects/P/subjects/S1?format=xml").content)
    assert doc.findtext("xnat:investigator/xnat:firstname", namespaces=NS) == "john"
    http(minixnat, "PUT", "/data/projects/P/subjects/S1?gender=female&dob=1980-02-03")
    doc = etree.fromstring(http(minixnat, "GET", "/data/projects/P/subjects/S1?format=xml").content)
    assert doc.findtext("xnat:demographics/xnat:gender", namespaces=NS) == "female"
    assert doc.findtext("xnat:demographics/xnat:dob", namespaces=NS) == "1980-02-03"
    # xnatpy builds its classes from minixnat's schema and reads the same values.
    schema = http(minixnat, "GET", "/xapi/schemas/xnat").text
    assert 'name="demographicData"' in schema
    assert 'name="addParam"' in schema
    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as session:
        session_subject = session.projects["P"].subjects["S1"]
        assert session_subject.demographics.gender == "female"
        assert session_subject.demographics.dob.isoformat() == "1980-02-03"
        assert session.experiments["E1"].age == 42.0
    # Listing columns by xpath, the key column always given; an unknown column is empty.
    listed = rows(
        minixnat, "/data/projects/P/subjects?columns=xnat:subjectData/investigator/firstname,nosuch"
    )
    assert listed[0]["xnat:subjectdata/investigator/firstname"] == "john"
    assert listed[0]["nosuch"] == ""
    assert "ID" in listed[0]


SESSION_DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<xnat:MRSession xmlns:xnat="http://nrg.wustl.edu/xnat"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" label="MR1" project="P">
  <xnat:date>2020-02-03</xnat:date>
  <xnat:subject_ID>NEWSUBJ</xnat:subject_ID>
  <xnat:fieldStrength>3.0</xnat:fieldStrength>
  <xnat:scanner manufacturer="ACME">X1</xnat:scanner>
  <xnat:scans>
    <xnat:scan ID="4" type="T1w" xsi:type="xnat:mrScanData">
      <xnat:quality>questionable</xnat:quality>
      <xnat:parameters><xnat:addParam name="TR">2.3</xnat:addParam></xnat:parameters>
    </xnat:scan>
  </xnat:scans>
</xnat:MRSession>
"""


def test_xml_documents_create_and_update(minixnat: MiniXnat) -> None:
    http(minixnat, "PUT", "/data/projects/P")
    xml = {"Content-Type": "text/xml"}
    # A session document naming a subject that does not exist: the subject is created.
    made = http(minixnat, "PUT", "/data/projects/P/experiments/MR1", data=SESSION_DOC, headers=xml)
    assert made.status_code == 201, made.text
    assert [s["label"] for s in rows(minixnat, "/data/projects/P/subjects")] == ["NEWSUBJ"]
    session = http(minixnat, "GET", "/data/projects/P/experiments/MR1?format=xml").content
    doc = etree.fromstring(session)
    assert doc.findtext("xnat:date", namespaces=NS) == "2020-02-03"
    assert doc.findtext("xnat:fieldStrength", namespaces=NS) == "3.0"
    scan = rows(minixnat, "/data/projects/P/experiments/MR1/scans")[0]
    assert (scan["ID"], scan["type"], scan["quality"]) == ("4", "T1w", "questionable")
    interface = pyxnat.Interface(minixnat.url, minixnat.user, minixnat.password)
    assert interface.select("/projects/P/experiments/MR1/scans/4").get_param("TR") == "2.3"
    # A subject document through pyxnat: demographics and custom fields are kept.
    subject_doc = (
        b'<xnat:Subject xmlns:xnat="http://nrg.wustl.edu/xnat" '
        b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" label="S2">'
        b'<xnat:fields><xnat:field name="site">north</xnat:field></xnat:fields>'
        b'<xnat:demographics xsi:type="xnat:demographicData"><xnat:gender>female</xnat:gender>'
        b"<xnat:handedness>left</xnat:handedness></xnat:demographics></xnat:Subject>"
    )
    posted = http(minixnat, "POST", "/data/projects/P/subjects", data=subject_doc, headers=xml)
    assert posted.status_code == 201, posted.text
    s2 = http(minixnat, "GET", "/data/projects/P/subjects/S2?format=json").json()["items"][0]
    assert demographics(s2)["gender"] == "female"
    assert demographics(s2)["handedness"] == "left"
    assert s2["children"][0]["items"][0]["data_fields"]["field"] == "north"
    # Provenance through pyxnat: steps are stored and replaced by the next document.
    recon = interface.select("/projects/P/subjects/NEWSUBJ/experiments/MR1/reconstructions/R1")
    recon.create()
    recon.provenance.set({"program": "bet", "program_version": "6.0"})
    recon.provenance.set({"program": "fast"})
    assert [step["program"] for step in recon.provenance.get()] == ["bet", "fast"]


def test_bad_documents_change_nothing(minixnat: MiniXnat) -> None:
    http(minixnat, "PUT", "/data/projects/P")
    xml = {"Content-Type": "text/xml"}
    for body, reason in (
        (b"<xnat:MRSession", "cannot be read"),
        (b"<Foo/>", "unknown root element"),
        (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><xnat:Subject xmlns:xnat="x">&a;</xnat:Subject>', ""),
    ):
        answer = http(minixnat, "PUT", "/data/projects/P/subjects/S9", data=body, headers=xml)
        if reason:
            assert answer.status_code == 400
            assert reason in answer.text
    # Only the well-formed subject document created a subject.
    assert [s["label"] for s in rows(minixnat, "/data/projects/P/subjects")] == ["S9"]
    none = http(
        minixnat,
        "POST",
        "/data/projects/P/subjects",
        data=b"<xnat:Subject xmlns:xnat='x'/>",
        headers=xml,
    )
    assert none.status_code == 400
    assert "label" in none.text


def test_sharing_lists_and_reads_through_the_other_project(minixnat: MiniXnat) -> None:
    from minixnat.store import Store

    store = Store(minixnat.root)
    store.add_user("mia", "pw")
    store.add_user("cole", "pw")
    store.close()
    for path in ("/data/projects/P", "/data/projects/Q", "/data/projects/P/subjects/S"):
        assert http(minixnat, "PUT", path).ok
    http(minixnat, "PUT", "/data/projects/Q/users/Members/mia")
    http(minixnat, "PUT", "/data/projects/Q/users/Collaborators/cole")
    http(minixnat, "PUT", "/data/projects/P/users/Collaborators/cole")  # he reads P
    made = http(
        minixnat, "PUT", "/data/projects/P/subjects/S/experiments/E?xsiType=xnat:mrSessionData"
    )
    assert made.status_code == 201
    mia = ("mia", "pw")
    assert http(minixnat, "GET", "/data/projects/Q/subjects/SX", auth=mia).status_code == 404
    # pyxnat shares the subject into Q under another label, and the experiment too.
    interface = pyxnat.Interface(minixnat.url, minixnat.user, minixnat.password)
    subject = interface.select.project("P").subject("S")
    assert subject.shares().get() == ["P"]
    subject.share("Q", label="SX")
    assert subject.shares().get() == ["P", "Q"]
    interface.select.project("P").subject("S").experiment("E").share("Q")
    # mia reads them through Q, under Q's permissions, and never through P.
    assert [r["label"] for r in rows(minixnat, "/data/projects/Q/subjects", auth=mia)] == ["SX"]
    assert http(minixnat, "GET", "/data/projects/Q/subjects/SX", auth=mia).ok
    assert [r["label"] for r in rows(minixnat, "/data/projects/Q/experiments", auth=mia)] == ["E"]
    assert http(minixnat, "GET", "/data/projects/P/subjects/S", auth=mia).status_code == 404
    # Refusals: a collaborator of Q, the owner project itself, a label already used in Q.
    cole = ("cole", "pw")
    share_path = "/data/projects/P/subjects/S/projects/Q"
    assert http(minixnat, "PUT", share_path, auth=cole).status_code == 403
    assert http(minixnat, "PUT", "/data/projects/P/subjects/S/projects/P").status_code == 400
    assert http(minixnat, "PUT", "/data/projects/Q/subjects/OWN").ok
    taken = http(minixnat, "PUT", "/data/projects/P/subjects/S/projects/Q?label=OWN")
    assert taken.status_code == 409
    # Unsharing takes it out of Q again.
    subject.unshare("Q")
    assert subject.shares().get() == ["P"]
    assert http(minixnat, "GET", "/data/projects/Q/subjects/SX", auth=mia).status_code == 404
    # Deleting the subject in its own project removes its shares with it.
    assert http(minixnat, "DELETE", "/data/projects/P/subjects/S").ok
    assert [r["label"] for r in rows(minixnat, "/data/projects/Q/experiments", auth=mia)] == []


def test_search_service_with_pyxnat(minixnat: MiniXnat) -> None:
    from minixnat.store import Store

    store = Store(minixnat.root)
    store.add_user("eve", "pw")
    store.close()
    for path in (
        "/data/projects/P",
        "/data/projects/SECRET",
        "/data/projects/P/subjects/S1?gender=female&dob=1980-01-01",
        "/data/projects/P/subjects/S2?gender=male&dob=1990-06-01",
        "/data/projects/SECRET/subjects/HIDDEN?gender=female",
    ):
        assert http(minixnat, "PUT", path).ok
    http(minixnat, "PUT", "/data/projects/P/users/Members/eve")
    interface = pyxnat.Interface(minixnat.url, minixnat.user, minixnat.password)
    assert "xnat:subjectData" in interface.inspect.datatypes()
    assert "xnat:subjectData/DOB" in interface.inspect.datatypes("xnat:subjectData")
    fields = ["xnat:subjectData/SUBJECT_LABEL", "xnat:subjectData/PROJECT"]
    women = interface.select("xnat:subjectData", fields).where(
        [("xnat:subjectData/GENDER_TEXT", "=", "female"), "AND"]
    )
    assert sorted(women.get("subject_label")) == ["HIDDEN", "S1"]
    # AND/OR sets, LIKE and a date comparison.
    found = interface.select("xnat:subjectData", fields).where(
        [
            ("xnat:subjectData/PROJECT", "=", "P"),
            [
                ("xnat:subjectData/DOB", "<", "1985-01-01"),
                ("xnat:subjectData/LABEL", "LIKE", "%2"),
                "OR",
            ],
            "AND",
        ]
    )
    assert sorted(found.get("subject_label")) == ["S1", "S2"]
    assert set(interface.inspect.field_values("xnat:subjectData/SUBJECT_LABEL")) >= {"S1", "S2"}
    # Saved searches: store, list, run, delete.
    interface.manage.search.save(
        "women",
        "xnat:subjectData",
        fields,
        [("xnat:subjectData/GENDER_TEXT", "=", "female"), "AND"],
    )
    assert "women" in interface.manage.search.saved()
    assert sorted(interface.manage.search.get("women").get("subject_label")) == ["HIDDEN", "S1"]
    # Another user's search results keep to what that user may read.
    eve = pyxnat.Interface(minixnat.url, "eve", "pw")
    assert "women" not in eve.manage.search.saved()
    assert (
        eve.select("xnat:subjectData", fields)
        .where([("xnat:subjectData/GENDER_TEXT", "=", "female"), "AND"])
        .get("subject_label")
        == "S1"
    )
    interface.manage.search.delete("women")
    assert "women" not in interface.manage.search.saved()
    # Bad documents: 400 with a reason; nothing stored.
    bad = http(minixnat, "POST", "/data/search?format=json", data=b"<xdat:search")
    assert bad.status_code == 400
    no_root = b'<xdat:search xmlns:xdat="http://nrg.wustl.edu/security"/>'
    assert "root element" in http(minixnat, "POST", "/data/search", data=no_root).text
    bad_op = (
        b'<xdat:search xmlns:xdat="http://nrg.wustl.edu/security">'
        b"<xdat:root_element_name>xnat:subjectData</xdat:root_element_name>"
        b'<xdat:search_where method="AND"><xdat:criteria><xdat:schema_field>xnat:subjectData/ID'
        b"</xdat:schema_field><xdat:comparison_type>LOOKS</xdat:comparison_type>"
        b"<xdat:value>x</xdat:value></xdat:criteria></xdat:search_where></xdat:search>"
    )
    assert http(minixnat, "POST", "/data/search", data=bad_op).status_code == 400
    assert http(minixnat, "PUT", "/data/search/saved/x1", data=no_root).status_code == 400
    assert rows(minixnat, "/data/search/saved") == []


def test_xnatpy_users_sharing_and_inspect(minixnat: MiniXnat) -> None:
    from minixnat.store import Store

    store = Store(minixnat.root)
    store.add_user("mia", "pw", firstname="Mia", email="mia@example.org")
    store.close()
    for path in ("/data/projects/P", "/data/projects/Q", "/data/projects/P/subjects/S"):
        assert http(minixnat, "PUT", path).ok
    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as session:
        assert set(session.users) == {"admin", "mia"}
        assert session.users["mia"].email == "mia@example.org"
        assert "xnat:subjectData/DOB" in session.inspect.datafields("xnat:subjectData")
        assert "xnat:mrSessionData" in session.inspect.datatypes()
        session.projects["P"].subjects["S"].share("Q", label="S_IN_Q")
        session.clearcache()
        assert [s.label for s in session.projects["Q"].subjects.values()] == ["S_IN_Q"]
    assert [r["login"] for r in rows(minixnat, "/data/projects/Q/users")] == ["admin"]


def test_listing_shortcut_columns(minixnat: MiniXnat) -> None:
    for path in (
        "/data/projects/P?alias=PALIAS",
        "/data/projects/P/subjects/S",
        "/data/projects/P/subjects/S/experiments/E?xsiType=xnat:mrSessionData&date=2021-03-04",
    ):
        assert http(minixnat, "PUT", path).ok
    shortcuts = "xsiType,label,project,subject_label,insert_date,last_modified,date"
    row = rows(minixnat, f"/data/projects/P/experiments?columns={shortcuts}")[0]
    assert row["xsiType"] == "xnat:mrSessionData"
    assert (row["label"], row["project"], row["subject_label"]) == ("E", "P", "S")
    assert row["insert_date"]
    assert row["last_modified"]
    assert row["date"] == "2021-03-04"
    subject = rows(minixnat, "/data/projects/P/subjects?columns=label,project,insert_date")[0]
    assert (subject["label"], subject["project"]) == ("S", "P")
    project = rows(minixnat, "/data/projects?columns=ID,alias")
    assert [(r["ID"], r["alias"]) for r in project] == [("P", "PALIAS")]


def test_all_files_of_a_session_by_every_path_to_it(minixnat: MiniXnat) -> None:
    """``…/experiments/X/files?all=true`` lists the session's own files and those of its
    scans, reached by ID or by project (and subject) and label alike; without ``all`` only
    the session's own."""
    http(minixnat, "PUT", "/data/projects/P")
    http(minixnat, "PUT", "/data/projects/P/subjects/S")
    base = "/data/projects/P/subjects/S/experiments/MR1"
    assert http(minixnat, "PUT", f"{base}?xsiType=xnat:mrSessionData").ok
    assert http(minixnat, "PUT", f"{base}/scans/1?xsiType=xnat:mrScanData").ok
    assert http(minixnat, "PUT", f"{base}/scans/1/resources/DICOM/files/a.dcm", data=b"a").ok
    assert http(minixnat, "PUT", f"{base}/resources/QC/files/qc.txt", data=b"qc").ok
    eid = rows(minixnat, "/data/projects/P/experiments")[0]["ID"]
    for path in (f"/data/experiments/{eid}", "/data/projects/P/experiments/MR1", base):
        listed = rows(minixnat, f"{path}/files", params={"all": "true"})
        assert sorted(r["Name"] for r in listed) == ["a.dcm", "qc.txt"], path
        own = rows(minixnat, f"{path}/files")
        assert [r["Name"] for r in own] == ["qc.txt"], path


def test_the_site_id_starts_the_ids_made_after_it_is_set(minixnat: MiniXnat) -> None:
    http(minixnat, "PUT", "/data/projects/P")
    http(minixnat, "PUT", "/data/projects/P/subjects/S1")
    assert http(minixnat, "GET", "/xapi/siteConfig/siteId").text == "XNAT"
    assert http(minixnat, "POST", "/xapi/siteConfig", json={"siteId": "Xnat4Tests"}).ok
    assert http(minixnat, "GET", "/xapi/siteConfig").json() == {"siteId": "Xnat4Tests"}
    http(minixnat, "PUT", "/data/projects/P/subjects/S2")
    ids = {r["label"]: r["ID"] for r in rows(minixnat, "/data/projects/P/subjects")}
    assert ids == {"S1": "XNAT_S00001", "S2": "Xnat4Tests_S00002"}  # given IDs stay
    with xnat.connect(minixnat.url, user=minixnat.user, password=minixnat.password) as s:
        subject = s.projects["P"].subjects["S2"]
        s.classes.MrSessionData(parent=subject, label="MR1")
        s.clearcache()
        assert s.projects["P"].experiments["MR1"].id == "Xnat4Tests_E00001"
    # One value as the body, as XNAT takes it.
    assert http(minixnat, "POST", "/xapi/siteConfig/siteId", data=b"CNDA\n").ok
    assert http(minixnat, "GET", "/xapi/siteConfig/siteId").text == "CNDA"

    # Refusals change nothing: a value that is not one word, a preference minixnat does not
    # keep (even beside one it keeps), a user who is not an admin, the guest.
    for body in ({"siteId": "two words"}, {"siteId": 7}, {"siteId": "OK", "siteUrl": "x"}):
        refused = http(minixnat, "POST", "/xapi/siteConfig", json=body)
        assert refused.status_code == 400, body
    assert "siteUrl" in refused.text
    assert http(minixnat, "POST", "/xapi/siteConfig", data=b"[1]").status_code == 400
    assert http(minixnat, "GET", "/xapi/siteConfig/siteUrl").status_code == 404
    assert http(minixnat, "PUT", "/xapi/siteConfig/siteId", data=b"x y").status_code == 400
    from minixnat.store import Store

    store = Store(minixnat.root)
    store.add_user("mia", "pw")
    store.close()
    mia = http(minixnat, "POST", "/xapi/siteConfig/siteId", data=b"MIA", auth=("mia", "pw"))
    assert mia.status_code == 403
    assert http(minixnat, "GET", "/xapi/siteConfig/siteId", auth=("mia", "pw")).text == "CNDA"
    assert http(minixnat, "POST", "/xapi/siteConfig/siteId", auth=None).status_code == 401
    assert http(minixnat, "GET", "/xapi/siteConfig/siteId").text == "CNDA"


def test_start_and_serve_set_the_site_id(tmp_path: Path) -> None:
    from minixnat.testing import start

    server = start(tmp_path / "a", site_id="Xnat4Tests")
    try:
        http(server, "PUT", "/data/projects/P")
        http(server, "PUT", "/data/projects/P/subjects/S")
        assert rows(server, "/data/projects/P/subjects")[0]["ID"] == "Xnat4Tests_S00001"
    finally:
        server.stop()
    refused = subprocess.run(
        [BIN / "minixnat", "serve", "--root", tmp_path / "a", "--port", "0", "--site-id", "a b"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "Invalid site ID 'a b'" in refused.stderr


def test_a_processing_script_records_its_workflow(minixnat: MiniXnat) -> None:
    from minixnat.store import Store

    http(minixnat, "PUT", "/data/projects/P")
    http(minixnat, "PUT", "/data/projects/P/subjects/S")
    http(minixnat, "PUT", "/data/projects/P/subjects/S/experiments/MR1?xsiType=xnat:mrSessionData")
    eid = rows(minixnat, "/data/projects/P/experiments")[0]["ID"]
    store = Store(minixnat.root)
    store.add_user("mia", "pw")
    store.add_user("cole", "pw")
    store.close()
    http(minixnat, "PUT", "/data/projects/P/users/Members/mia")
    http(minixnat, "PUT", "/data/projects/P/users/Collaborators/cole")
    mia = ("mia", "pw")

    def put(query: dict[str, str], path: str = "/data/workflows", **kw: Any) -> requests.Response:
        params = {f"wrk:workflowData/{k}": v for k, v in query.items()}
        return http(minixnat, "PUT", path, params=params, **kw)

    key = {"ID": eid, "pipeline_name": "tools/Recon.xml", "launch_time": "2026-12-01T07:00:00"}
    made = put({**key, "data_type": "xnat:mrSessionData", "status": "Running"}, auth=mia)
    assert made.status_code == 200, made.text
    number = made.text
    # The same experiment, pipeline and launch time (written another way) is the same record.
    again = put({**key, "launch_time": "2026-12-01 07:00", "percentageComplete": "50"}, auth=mia)
    assert again.text == number
    assert put({"status": "Failed (Dismissed)"}, f"/data/workflows/{number}", auth=mia).ok
    latest = http(
        minixnat,
        "GET",
        "/data/services/workflows/Recon",
        params={"experiment": eid, "format": "json"},
    ).json()["items"][0]["data_fields"]
    assert latest["wrk_workflowData_id"] == number
    assert (latest["status"], latest["percentageComplete"]) == ("Failed (Dismissed)", "50")
    assert latest["create_user"] == "mia"
    assert latest["ExternalID"] == "P"
    found = http(
        minixnat,
        "GET",
        "/data/workflows",
        params={f"wrk:workflowData/{k}": v for k, v in key.items()},
    )
    assert 'status="Failed (Dismissed)"' in found.text

    # A <wrk:Workflow/> document makes a record too; its status is listed as written.
    document = (
        f'<wrk:Workflow xmlns:wrk="http://nrg.wustl.edu/workflow" ID="{eid}" '
        'pipeline_name="QC" launch_time="2026-12-01 08:00:00" data_type="xnat:mrSessionData" '
        'status="AWAITING ACTION" scan_id="1" jobID="4711"/>'
    )
    other = http(minixnat, "PUT", "/data/workflows", data=document.encode())
    assert other.ok
    assert other.text != number
    waiting = http(
        minixnat,
        "GET",
        "/data/services/workflows/QC",
        params={"experiment": eid, "status": "AWAITING ACTION", "display": "ALL", "format": "json"},
    ).json()["ResultSet"]["Result"]
    assert [(r["scan_id"], r["jobID"]) for r in waiting] == [("1", "4711")]

    # Refusals, each naming what is wrong; none writes anything.
    before = http(
        minixnat, "GET", f"/data/services/workflows/%25?experiment={eid}&display=ALL"
    ).text
    refused = put({"ID": eid, "pipeline_name": "X"})
    assert refused.status_code == 400
    assert "launch_time, data_type, status not given" in refused.text
    assert put({**key, "pipeline_name": "Y", "colour": "red"}).status_code == 400
    assert put({**key, "launch_time": "yesterday"}).status_code == 400
    assert put({**key, "ID": "XNAT_E99999", "data_type": "d", "status": "s"}).status_code == 404
    assert (
        put({"status": "Complete"}, f"/data/workflows/{number}", auth=("cole", "pw")).status_code
        == 403
    )
    assert (
        put(
            {**key, "pipeline_name": "Z", "data_type": "d", "status": "s"}, auth=("cole", "pw")
        ).status_code
        == 403
    )
    assert put({"status": "Complete"}, f"/data/workflows/{number}", auth=None).status_code == 401
    assert put({"status": ""}, f"/data/workflows/{number}").status_code == 400
    assert (
        http(
            minixnat, "PUT", "/data/workflows/999", params={"wrk:workflowData/status": "x"}
        ).status_code
        == 404
    )
    assert http(minixnat, "PUT", "/data/workflows", data=b"<Project/>").status_code == 400
    assert (
        http(minixnat, "GET", f"/data/services/workflows/%25?experiment={eid}&display=ALL").text
        == before
    )
