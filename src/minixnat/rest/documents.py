"""XML documents of XNAT objects (seed 002's "Upload XML", XNAT's StoreXML), read into the
same (xpath, value) pairs a ``PUT ?xpath=value`` carries.

``<xnat:MRSession ID=… label=… project=…><xnat:date>…</xnat:date><xnat:scans><xnat:scan
ID="1" type="T1" xsi:type="xnat:mrScanData">…`` becomes a :class:`Document`: its datatype, its
attributes, its fields by path relative to the datatype (``date``, ``investigator/firstname``,
``provenance/processStep[2]/program``, ``parameters/addParam[name=TR]/addField``), its custom
fields and, for a session, one document per scan.  Files and resources in a document are
not read: they reach the archive through uploads.  The parser is the standard library's
(expat: no external entities, bounded entity expansion).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field

from minixnat.store import CustomVariable

XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
# Root elements and the datatypes they stand for (an xsi:type attribute wins).
ELEMENTS = {
    "Project": "xnat:projectData",
    "Subject": "xnat:subjectData",
    "MRSession": "xnat:mrSessionData",
    "CTSession": "xnat:ctSessionData",
    "PETSession": "xnat:petSessionData",
    "PETMRSession": "xnat:petmrSessionData",
    "MRScan": "xnat:mrScanData",
    "CTScan": "xnat:ctScanData",
    "PETScan": "xnat:petScanData",
    "QCManualAssessment": "xnat:qcManualAssessorData",
    "QCAssessment": "xnat:qcAssessmentData",
    "ReconstructedImage": "xnat:reconstructedImageData",
}
# Children that are not fields: files come by upload, sharing has its own service.
SKIPPED = {"resources", "out", "in", "file", "sharing", "experiments", "assessors"}
MAX_BYTES = 16 * 1024 * 1024


class DocumentError(ValueError):
    """Not a readable XNAT document; the message says why."""


@dataclass
class Document:
    xsi_type: str
    attributes: dict[str, str]
    fields: list[tuple[str, str]] = field(default_factory=list)
    custom: dict[str, str] = field(default_factory=dict)
    scans: list[Document] = field(default_factory=list)
    reconstructions: list[Document] = field(default_factory=list)
    #: A project's custom variable definitions (its ``studyProtocol`` elements); None when
    #: the document has none, so that it leaves the stored ones as they are.
    protocols: list[CustomVariable] | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """As a PUT's parameters: ``xsiType``, then ``{datatype}/{path}=value``."""
        pairs = [("xsiType", self.xsi_type)]
        pairs += [(f"{self.xsi_type}/{key}", value) for key, value in self.attributes.items()]
        pairs += [(f"{self.xsi_type}/{path}", value) for path, value in self.fields]
        return pairs

    @property
    def has_provenance(self) -> bool:
        return any(path.startswith("provenance/") for path, _ in self.fields)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _datatype(element: ET.Element) -> str:
    declared = element.get(XSI_TYPE)
    if declared:
        return declared
    name = _local(element.tag)
    if name not in ELEMENTS:
        msg = (
            f"unknown root element {name!r}: send a document whose root is one of "
            f"{', '.join(sorted(ELEMENTS))}, or give it an xsi:type"
        )
        raise DocumentError(msg)
    return ELEMENTS[name]


def parse(data: bytes) -> Document:
    """The document in ``data``; :class:`DocumentError` if it is not one."""
    if len(data) > MAX_BYTES:
        msg = f"the document is larger than {MAX_BYTES // (1024 * 1024)} MiB"
        raise DocumentError(msg)
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, RecursionError) as exc:
        msg = f"the XML document cannot be read: {exc}"
        raise DocumentError(msg) from None
    return _document(root, _datatype(root))


def _document(element: ET.Element, xsi_type: str) -> Document:
    attributes = {k: v for k, v in element.attrib.items() if "}" not in k}
    doc = Document(xsi_type, attributes)
    _walk(element, "", doc)
    return doc


def _walk(element: ET.Element, prefix: str, doc: Document) -> None:
    counts = Counter(_local(child.tag) for child in element)
    seen: Counter[str] = Counter()
    for child in element:
        tag = _local(child.tag)
        seen[tag] += 1
        if not prefix and tag in SKIPPED:
            continue
        if not prefix and tag == "scans":
            doc.scans += [_document(s, s.get(XSI_TYPE) or "xnat:mrScanData") for s in child]
            continue
        if not prefix and tag == "reconstructions":
            doc.reconstructions += [_document(r, "xnat:reconstructedImageData") for r in child]
            continue
        if not prefix and tag == "studyProtocol":
            doc.protocols = (doc.protocols or []) + _definitions(child)
            continue
        if not prefix and tag == "fields":
            for custom in child:
                name = custom.get("name")
                if name:
                    doc.custom[name] = (custom.text or "").strip()
            continue
        step = tag
        if child.get("name") is not None:
            step = f"{tag}[name={child.get('name')}]"
        elif counts[tag] > 1 or tag == "processStep":
            step = f"{tag}[{seen[tag]}]"
        path = f"{prefix}{step}"
        for name, value in child.attrib.items():
            if "}" not in name and name != "name":
                doc.fields.append((f"{path}/{name}", value))
        if len(child):
            _walk(child, f"{path}/", doc)
        text = (child.text or "") + "".join(grandchild.tail or "" for grandchild in child)
        if text.strip():
            if child.get("name") is not None:
                path += "/addField"  # a named parameter's value is its text
            doc.fields.append((path, text.strip()))


def _definitions(protocol: ET.Element) -> list[CustomVariable]:
    """The custom fields a ``studyProtocol`` defines: ``definitions/definition[@ID]/fields/
    field[@type=custom]``, each with its datatype."""
    found = []
    for definition in protocol.iterfind("{*}definitions/{*}definition"):
        group = definition.get("ID", "")
        data_type = definition.get("data-type") or protocol.get("data-type", "")
        for item in definition.iterfind("{*}fields/{*}field"):
            name = item.get("name", "")
            if group and data_type and name and item.get("type", "custom") == "custom":
                datatype = item.get("datatype") or "string"
                required = item.get("required") in ("1", "true")
                found.append(CustomVariable(data_type, group, name, datatype, required))
    return found
