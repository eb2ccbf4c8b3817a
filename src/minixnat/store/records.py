"""The rows an archive root holds, as frozen values, and the store's one error type."""

from __future__ import annotations

from dataclasses import dataclass

from minixnat.errors import MinixnatError

# The site ID new objects' IDs start with (``XNAT_S00001``) until an admin sets another
# (XNAT's siteConfig preference ``siteId``, kept in the ``meta`` table).
DEFAULT_SITE_ID = "XNAT"
ROLES = ("owner", "member", "collaborator")
ACCESS_LEVELS = ("private", "protected", "public")


class StoreError(MinixnatError):
    """A store operation was refused (unknown object, duplicate, bad value): 400."""


@dataclass(frozen=True)
class User:
    login: str
    admin: bool
    enabled: bool
    firstname: str = ""
    lastname: str = ""
    email: str = ""
    id: int = 0  # XNAT's xdat_user_id: 1 for the first user


# Where a new project's uploads go when they name no destination: 4, the archive (refusing
# files that exist), as XNAT's site setting defaultPrearchiveCode has it unless changed; 0
# (the prearchive) is a project setting away (PUT .../prearchive_code/0).
NEW_PROJECT_PREARCHIVE_CODE = 4


@dataclass(frozen=True)
class Project:
    id: str
    secondary_id: str
    name: str
    description: str
    keywords: str
    pi_firstname: str
    pi_lastname: str
    accessibility: str
    insert_date: str
    insert_user: str
    prearchive_code: int = NEW_PROJECT_PREARCHIVE_CODE
    quarantine_code: int = 0


# The values a subject's demographics take: gender (each spelling a client may send → the
# one stored) and handedness, as XNAT's demographicData has them.
GENDERS = {"m": "male", "male": "male", "f": "female", "female": "female", "o": "other",
           "other": "other", "u": "unknown", "unknown": "unknown"}  # fmt: skip
HANDEDNESS = ("right", "left", "ambidextrous", "unknown")


@dataclass(frozen=True)
class Subject:
    id: str
    project: str
    label: str
    gender: str
    dob: str
    yob: str
    handedness: str
    fields: str
    insert_date: str
    insert_user: str
    last_modified: str = ""


@dataclass(frozen=True)
class Experiment:
    id: str
    project: str
    subject_id: str
    label: str
    xsi_type: str
    date: str
    time: str
    modality: str
    uid: str
    session_id: str | None
    insert_date: str
    insert_user: str
    last_modified: str = ""

    @property
    def is_assessor(self) -> bool:
        return self.session_id is not None


@dataclass(frozen=True)
class Scan:
    pk: int
    experiment_id: str
    scan_id: str
    xsi_type: str
    type: str
    series_description: str
    quality: str
    frames: str
    note: str
    uid: str
    modality: str


@dataclass(frozen=True)
class Recon:
    pk: int
    experiment_id: str
    recon_id: str
    type: str
    base_scan_type: str


@dataclass(frozen=True)
class Resource:
    pk: int
    owner_kind: str
    owner_key: str
    label: str
    format: str
    content: str
    tags: str
    description: str
    directory: str


@dataclass(frozen=True)
class FileRow:
    resource_pk: int
    path: str
    size: int
    md5: str
    format: str
    content: str
    tags: str
    created: str


@dataclass(frozen=True)
class AliasToken:
    alias: str
    secret: str
    login: str
    created_ms: int
    expires_ms: int
    enabled: bool


@dataclass(frozen=True)
class LoginSession:
    login: str
    token: str  # the alias token the session was opened with ('' for a password)
    last_seen_ms: int
