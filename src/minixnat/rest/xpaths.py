"""Field paths as XNAT clients write them: ``xnat:mrSessionData/age``, ``age`` with an
``xsiType``, ``xnat:mrScanData/parameters/addParam[name=TR]/addField``, and how they come
back: listing columns (lower-cased xpaths) and nested XML elements.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape, quoteattr

from minixnat.rest.tables import RESERVED, TYPE_PREDICATE, below_datatype

_BRACKETS = re.compile(r"\[[^\]]*\]")
_NAMED = re.compile(r"^(?P<tag>[^\[]+)\[(?:@?name)=(?P<name>[^\]]+)\]$")
_POSITION = re.compile(r"^(?P<tag>[^\[]+)\[(?P<pos>\d+)\]$")
# Parameters that are instructions, never fields.
NOT_FIELDS = RESERVED | {
    "xsitype",
    "inbody",
    "overwrite",
    "allowdatadeletion",
    "use_label",
    "label",
    "extract",
    "content",
    "tags",
    "description",
    "name",
    "primary",
    "alias",
}
# Fields with a column of their own, per collection (matched on the path's last step).
TYPED = {
    "projects": {"id", "name", "secondary_id", "description", "keywords", "firstname",
                 "lastname", "accessibility", "alias"},
    "subjects": {"id", "label", "project", "gender", "dob", "yob", "handedness"},
    "experiments": {"id", "label", "project", "subject_id", "date", "time", "modality", "uid"},
    "scans": {"id", "type", "series_description", "quality", "frames", "note", "uid",
              "modality"},
    "reconstructions": {"id", "type", "basescantype"},
    "assessors": {"id", "label", "project", "date", "time"},
}  # fmt: skip
# Numbers XNAT keeps as doubles (and so writes back as ``42.0``).
DOUBLES = {("experiments", "age"), ("assessors", "age")}


def request_pairs(query: list[tuple[str, str]], form: dict[str, str]) -> list[tuple[str, str]]:
    """Every (key, value), with a key whose ``[…=…]`` was sent unescaped put back together
    (``…[name=x]/field=v``), and without type predicates: ``demographics[@xsi:type=
    xnat:demographicData]/age`` (xnatpy's path to a subject's age) is ``demographics/age``."""
    pairs = []
    for key, value in [*query, *form.items()]:
        if key.count("[") > key.count("]") and "=" in value:
            rest, _, value = value.partition("=")
            key = f"{key}={rest}"
        pairs.append((TYPE_PREDICATE.sub("", key), "" if value == "NULL" else value))
    return pairs


def generic_fields(
    pairs: list[tuple[str, str]], collection: str, *, typed_hint: bool
) -> dict[str, str]:
    """The fields of a PUT that have no column: xpaths with a datatype prefix, and (when the
    request names its ``xsiType``) bare names that are neither instructions nor columns."""
    found: dict[str, str] = {}
    for key, value in pairs:
        path = below_datatype(key)
        if path is None:
            if not typed_hint or "/" in key or key.lower() in NOT_FIELDS:
                continue
            path = key
        if path.lower().startswith("fields/field[") and collection == "subjects":
            continue  # a subject's custom fields have their own store
        last = _BRACKETS.sub("", path).rsplit("/", 1)[-1].lower()
        if last in TYPED.get(collection, set()) or path.lower() == "id":
            continue
        if (collection, path.lower()) in DOUBLES and value:
            try:
                value = repr(float(value))
            except ValueError:
                pass  # kept as given; a client that sends text reads text back
        found[path] = value
    return found


CUSTOM_FIELD = re.compile(r"^fields/field\[name=(?P<name>[^\]]+)\]/field$")


def custom_field_path(name: str) -> str:
    """Where a custom field is kept among an object's fields (what CUSTOM_FIELD reads)."""
    return f"fields/field[name={name}]/field"


SCAN_PARAMETER = re.compile(r"^parameters/addParam\[name=(?P<name>[^\]]+)\]/addField$")


def named_fields(
    fields: dict[str, str], pattern: re.Pattern[str] = CUSTOM_FIELD
) -> tuple[dict[str, str], dict[str, str]]:
    """Split stored fields into (the named ones ``pattern`` matches, by name; the others).
    A custom field is kept under its xpath, ``fields/field[name=site]/field``, and a scan's
    named parameter under ``parameters/addParam[name=TR]/addField`` (SCAN_PARAMETER); JSON
    shows them apart from the object's own fields, as children."""
    named: dict[str, str] = {}
    others: dict[str, str] = {}
    for path, value in fields.items():
        found = pattern.match(path)
        if found:
            named[found["name"]] = value
        else:
            others[path] = value
    return named, others


def nested_xml(fields: dict[str, str], prefix: str = "xnat") -> str:
    """Fields as nested elements, in order: ``investigator/firstname`` →
    ``<xnat:investigator><xnat:firstname>…``; ``addParam[name=TR]/addField`` →
    ``<xnat:addParam name="TR">…`` (and ``fields/field[name=site]/field`` →
    ``<xnat:fields><xnat:field name="site">…``); ``processStep[2]/program`` → the second
    step."""
    tree: dict[str, object] = {}
    for path, value in fields.items():
        node = tree
        steps = path.split("/")
        named = _NAMED.match(steps[-2]) if len(steps) >= 2 else None
        if named and steps[-1] in ("addField", named["tag"]):
            # The value of a named parameter or custom field is the element's text:
            # ``<xnat:addParam name="TR">…``, ``<xnat:field name="site">…``.
            steps = steps[:-1]
        for step in steps[:-1]:
            child = node.setdefault(step, {})
            if not isinstance(child, dict):
                child = node[step] = {"": child}
            node = child
        if isinstance(node.get(steps[-1]), dict):
            node[steps[-1]][""] = value  # type: ignore[index]  # text beside attributes
        else:
            node[steps[-1]] = value
    return _elements(tree, prefix)


def _elements(tree: dict[str, object], prefix: str) -> str:
    out = []
    for step, content in tree.items():
        if step == "":
            out.append(escape(str(content)))
            continue
        attrs, tag = "", step
        named = _NAMED.match(step)
        positioned = _POSITION.match(step)
        if named:
            tag, attrs = named["tag"], f" name={quoteattr(named['name'])}"
        elif positioned:
            tag = positioned["tag"]
        if tag == "demographics":
            attrs += ' xsi:type="xnat:demographicData"'
        ns = "prov" if tag in ("processStep",) or prefix == "prov" else prefix
        if isinstance(content, dict) and "" in content:
            # Text beside leaf values: those were the element's attributes
            # (``<xnat:scanner manufacturer="…">name</xnat:scanner>``).
            leaves = {k: v for k, v in content.items() if k and not isinstance(v, dict)}
            attrs += "".join(f" {k}={quoteattr(str(v))}" for k, v in leaves.items())
            content = {k: v for k, v in content.items() if k not in leaves}
        inner = (
            _elements(content, "prov" if ns == "prov" else prefix)
            if isinstance(content, dict)
            else escape(str(content))
        )
        out.append(f"<{ns}:{tag}{attrs}>{inner}</{ns}:{tag}>")
    return "".join(out)
