"""The archive database schema and its migrations.

An archive root holds ``minixnat.sqlite`` (metadata) next to ``archive/`` (the files, in
XNAT's own on-disk layout).  ``SCHEMA_VERSION`` is stored in the ``meta`` table; opening an
archive runs every migration above the stored version, so an archive written by one release
opens in the next.  An archive *newer* than this code is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 8

# Each entry upgrades the schema from version ``index`` to ``index + 1``.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE users (
        login TEXT PRIMARY KEY,
        salt TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        admin INTEGER NOT NULL DEFAULT 0,
        enabled INTEGER NOT NULL DEFAULT 1,
        firstname TEXT NOT NULL DEFAULT '',
        lastname TEXT NOT NULL DEFAULT '',
        email TEXT NOT NULL DEFAULT ''
    );

    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        secondary_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        keywords TEXT NOT NULL DEFAULT '',
        pi_firstname TEXT NOT NULL DEFAULT '',
        pi_lastname TEXT NOT NULL DEFAULT '',
        accessibility TEXT NOT NULL DEFAULT 'private'
            CHECK (accessibility IN ('private', 'protected', 'public')),
        insert_date TEXT NOT NULL,
        insert_user TEXT NOT NULL
    );

    CREATE TABLE project_roles (
        project TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        login TEXT NOT NULL REFERENCES users(login) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('owner', 'member', 'collaborator')),
        PRIMARY KEY (project, login)
    );

    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);

    CREATE TABLE subjects (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        gender TEXT NOT NULL DEFAULT '',
        dob TEXT NOT NULL DEFAULT '',
        yob TEXT NOT NULL DEFAULT '',
        handedness TEXT NOT NULL DEFAULT '',
        fields TEXT NOT NULL DEFAULT '{}',
        insert_date TEXT NOT NULL,
        insert_user TEXT NOT NULL,
        UNIQUE (project, label)
    );

    -- Image sessions and assessors are both experiments, as in XNAT.  For an image
    -- assessor, session_id names the image session it assesses.
    CREATE TABLE experiments (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        subject_id TEXT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        xsi_type TEXT NOT NULL,
        date TEXT NOT NULL DEFAULT '',
        time TEXT NOT NULL DEFAULT '',
        modality TEXT NOT NULL DEFAULT '',
        uid TEXT NOT NULL DEFAULT '',
        session_id TEXT REFERENCES experiments(id) ON DELETE CASCADE,
        insert_date TEXT NOT NULL,
        insert_user TEXT NOT NULL,
        UNIQUE (project, label)
    );

    CREATE TABLE scans (
        pk INTEGER PRIMARY KEY AUTOINCREMENT,
        experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        scan_id TEXT NOT NULL,
        xsi_type TEXT NOT NULL,
        type TEXT NOT NULL DEFAULT '',
        series_description TEXT NOT NULL DEFAULT '',
        quality TEXT NOT NULL DEFAULT 'usable',
        frames TEXT NOT NULL DEFAULT '',
        note TEXT NOT NULL DEFAULT '',
        uid TEXT NOT NULL DEFAULT '',
        modality TEXT NOT NULL DEFAULT '',
        UNIQUE (experiment_id, scan_id)
    );

    CREATE TABLE reconstructions (
        pk INTEGER PRIMARY KEY AUTOINCREMENT,
        experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        recon_id TEXT NOT NULL,
        type TEXT NOT NULL DEFAULT '',
        base_scan_type TEXT NOT NULL DEFAULT '',
        UNIQUE (experiment_id, recon_id)
    );

    -- owner_kind: project | subject | experiment | scan | recon | assessor
    -- owner_key: project id, subject id, experiment id, scans.pk, reconstructions.pk,
    --            or the assessor's experiment id.
    CREATE TABLE resources (
        pk INTEGER PRIMARY KEY AUTOINCREMENT,
        owner_kind TEXT NOT NULL,
        owner_key TEXT NOT NULL,
        label TEXT NOT NULL,
        format TEXT NOT NULL DEFAULT '',
        content TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        directory TEXT NOT NULL,
        UNIQUE (owner_kind, owner_key, label)
    );

    CREATE TABLE files (
        resource_pk INTEGER NOT NULL REFERENCES resources(pk) ON DELETE CASCADE,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        md5 TEXT NOT NULL,
        format TEXT NOT NULL DEFAULT '',
        content TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        PRIMARY KEY (resource_pk, path)
    );

    CREATE TABLE alias_tokens (
        alias TEXT PRIMARY KEY,
        secret TEXT NOT NULL,
        login TEXT NOT NULL REFERENCES users(login) ON DELETE CASCADE,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1
    );

    CREATE TABLE login_sessions (
        sid TEXT PRIMARY KEY,
        login TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );

    CREATE TABLE download_catalogs (
        id TEXT PRIMARY KEY,
        login TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        request TEXT NOT NULL
    );

    CREATE INDEX subjects_project ON subjects(project);
    CREATE INDEX experiments_project ON experiments(project);
    CREATE INDEX experiments_subject ON experiments(subject_id);
    CREATE INDEX experiments_session ON experiments(session_id);
    CREATE INDEX scans_experiment ON scans(experiment_id);
    CREATE INDEX resources_owner ON resources(owner_kind, owner_key);
    -- XNAT's resource ids start in the hundreds; start ours there too, so a client that
    -- confuses a resource id with a scan id fails loudly.
    INSERT INTO sqlite_sequence (name, seq) VALUES ('resources', 100);
    INSERT INTO sqlite_sequence (name, seq) VALUES ('scans', 1000);
    INSERT INTO sqlite_sequence (name, seq) VALUES ('reconstructions', 500);
    """,
    # 1 -> 2: the prearchive (uploaded sessions waiting to be archived).  ``meta`` holds the
    # session as the importer built it (subject, label, scans and their files) as JSON;
    # the files live under ROOT/prearchive/{project}/{timestamp}/{folder}/.
    """
    CREATE TABLE prearchive (
        project TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        folder TEXT NOT NULL,
        name TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        uploaded TEXT NOT NULL,
        lastmod TEXT NOT NULL,
        scan_date TEXT NOT NULL DEFAULT '',
        scan_time TEXT NOT NULL DEFAULT '',
        tag TEXT NOT NULL DEFAULT '',
        autoarchive TEXT NOT NULL DEFAULT 'Manual',
        login TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        meta TEXT NOT NULL,
        PRIMARY KEY (project, timestamp, folder)
    );
    """,
    # 2 -> 3: crash-safe writes (journal.py).  A transaction that moves files commits its
    # journal's id here together with its rows; recovery finishes exactly those journals.
    """
    CREATE TABLE journal_commits (id TEXT PRIMARY KEY);
    -- the alias token a login session was opened with: invalidating it ends the session
    ALTER TABLE login_sessions ADD COLUMN token TEXT NOT NULL DEFAULT '';
    -- when the session was last used (wall clock, ms): sessions live in this table only
    ALTER TABLE login_sessions ADD COLUMN last_seen_ms INTEGER NOT NULL DEFAULT 0;
    UPDATE login_sessions SET last_seen_ms = created_ms;
    """,
    # 3 -> 4: what XNAT clients set on projects and read back: aliases, the prearchive and
    # quarantine codes; and when subjects and experiments last changed.
    """
    CREATE TABLE project_aliases (
        alias TEXT PRIMARY KEY,
        project TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE
    );
    ALTER TABLE projects ADD COLUMN prearchive_code INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE projects ADD COLUMN quarantine_code INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE subjects ADD COLUMN last_modified TEXT NOT NULL DEFAULT '';
    ALTER TABLE experiments ADD COLUMN last_modified TEXT NOT NULL DEFAULT '';
    UPDATE subjects SET last_modified = insert_date;
    UPDATE experiments SET last_modified = insert_date;
    -- Fields of an object's XML document that have no column of their own, by their path
    -- relative to the datatype (``age``, ``investigator/firstname``,
    -- ``parameters/addParam[name=TR]``, ``provenance/processStep[2]/program``).
    CREATE TABLE object_fields (
        owner_kind TEXT NOT NULL,
        owner_key TEXT NOT NULL,
        path TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (owner_kind, owner_key, path)
    );
    -- Subjects and experiments shared into projects other than their own, under a label
    -- of that project.
    CREATE TABLE shares (
        kind TEXT NOT NULL CHECK (kind IN ('subject', 'experiment')),
        key TEXT NOT NULL,
        project TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        PRIMARY KEY (kind, key, project),
        UNIQUE (kind, project, label)
    );
    -- Saved searches (xdat:stored_search): the bundle as sent, and who may run it.
    CREATE TABLE saved_searches (
        id TEXT PRIMARY KEY,
        login TEXT NOT NULL,
        brief_description TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        root_element TEXT NOT NULL,
        allowed_users TEXT NOT NULL DEFAULT '',
        document TEXT NOT NULL
    );
    """,
    # 4 -> 5: workflow records (XNAT's wrk:workflowData): one row per step of processing
    # of an experiment, archiving ("Transfer") and snapshot generation.  Rows that are
    # Queued or In Progress are the snapshot worker's queue, so it survives a restart.
    """
    CREATE TABLE workflows (
        wrk_id INTEGER PRIMARY KEY AUTOINCREMENT,
        experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        project TEXT NOT NULL,
        data_type TEXT NOT NULL,
        pipeline_name TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('Queued', 'In Progress', 'Complete', 'Failed')),
        launch_time TEXT NOT NULL,
        current_step_launch_time TEXT NOT NULL,
        current_step_id TEXT NOT NULL DEFAULT '',
        step_description TEXT NOT NULL DEFAULT '',
        percentage_complete TEXT NOT NULL DEFAULT '0.0',
        create_user TEXT NOT NULL,
        category TEXT NOT NULL DEFAULT 'SIDE_ADMIN',
        type TEXT NOT NULL DEFAULT 'PROCESS',
        src TEXT NOT NULL DEFAULT '',
        comments TEXT NOT NULL DEFAULT '',
        details TEXT NOT NULL DEFAULT '',
        justification TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX workflows_experiment ON workflows(experiment_id);
    CREATE INDEX workflows_status ON workflows(status);
    """,
    # 5 -> 6: the activity tracker: each user's imports and how they ended.
    """
    CREATE TABLE activities (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        login TEXT NOT NULL,
        project TEXT NOT NULL DEFAULT '',
        filename TEXT NOT NULL DEFAULT '',
        destination TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('receiving', 'processing', 'done', 'failed')),
        size INTEGER NOT NULL DEFAULT 0,
        files INTEGER NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT '',
        uris TEXT NOT NULL DEFAULT '',
        started TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    CREATE INDEX activities_login ON activities(login, id);
    """,
    # 6 -> 7: a project's custom variable definitions (XNAT's study protocols): which
    # custom fields its subjects or sessions carry, in named groups, with their types.
    """
    CREATE TABLE custom_variables (
        project TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        data_type TEXT NOT NULL,
        group_id TEXT NOT NULL,
        name TEXT NOT NULL,
        datatype TEXT NOT NULL DEFAULT 'string',
        required INTEGER NOT NULL DEFAULT 0,
        position INTEGER NOT NULL,
        PRIMARY KEY (project, data_type, group_id, name)
    );
    """,
    # 7 -> 8: workflow records written by clients (PUT /data/workflows): any status word a
    # pipeline uses (XNAT's are free text: Running, Failed (Dismissed), …), the scan a record
    # is about, the next step and the batch system's job ID.  SQLite cannot drop a CHECK,
    # so the table is built again.
    """
    CREATE TABLE workflows_new (
        wrk_id INTEGER PRIMARY KEY AUTOINCREMENT,
        experiment_id TEXT NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        project TEXT NOT NULL,
        data_type TEXT NOT NULL,
        pipeline_name TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status <> ''),
        launch_time TEXT NOT NULL,
        current_step_launch_time TEXT NOT NULL,
        current_step_id TEXT NOT NULL DEFAULT '',
        step_description TEXT NOT NULL DEFAULT '',
        percentage_complete TEXT NOT NULL DEFAULT '0.0',
        create_user TEXT NOT NULL,
        category TEXT NOT NULL DEFAULT 'SIDE_ADMIN',
        type TEXT NOT NULL DEFAULT 'PROCESS',
        src TEXT NOT NULL DEFAULT '',
        comments TEXT NOT NULL DEFAULT '',
        details TEXT NOT NULL DEFAULT '',
        justification TEXT NOT NULL DEFAULT '',
        scan_id TEXT NOT NULL DEFAULT '',
        next_step_id TEXT NOT NULL DEFAULT '',
        job_id TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO workflows_new (wrk_id, experiment_id, project, data_type, pipeline_name,
        status, launch_time, current_step_launch_time, current_step_id, step_description,
        percentage_complete, create_user, category, type, src, comments, details,
        justification)
    SELECT wrk_id, experiment_id, project, data_type, pipeline_name, status, launch_time,
        current_step_launch_time, current_step_id, step_description, percentage_complete,
        create_user, category, type, src, comments, details, justification FROM workflows;
    -- The numbering goes on where it was (records deleted with their session keep theirs).
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'workflows_new', seq FROM sqlite_sequence WHERE name = 'workflows'
        AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'workflows_new');
    UPDATE sqlite_sequence SET seq = MAX(seq,
        COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'workflows'), 0))
        WHERE name = 'workflows_new';
    DROP TABLE workflows;
    ALTER TABLE workflows_new RENAME TO workflows;
    CREATE INDEX workflows_experiment ON workflows(experiment_id);
    CREATE INDEX workflows_status ON workflows(status);
    """,
]


class SchemaError(RuntimeError):
    """The archive's schema cannot be used by this release."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring ``conn`` up to :data:`SCHEMA_VERSION`; return the version it started at."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
    ).fetchone()
    current = 0
    if has_meta:
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        current = int(row[0]) if row else 0
    if current > SCHEMA_VERSION:
        msg = (
            f"this archive has schema version {current}, newer than this minixnat "
            f"understands ({SCHEMA_VERSION}); upgrade minixnat to open it"
        )
        raise SchemaError(msg)
    for version in range(current, SCHEMA_VERSION):
        # One transaction per step: a crash mid-upgrade leaves the previous version whole.
        conn.executescript(
            f"BEGIN;\n{MIGRATIONS[version]}\n"
            "INSERT OR REPLACE INTO meta (key, value) "
            f"VALUES ('schema_version', '{version + 1}');\nCOMMIT;"
        )
    return current
