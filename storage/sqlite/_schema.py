"""The SQLite schema of a taskactors store, as an ordered list of migrations.

Theory of operation
-------------------
``PRAGMA user_version`` holds the number of migrations a database has had.
Opening a store applies the missing ones, in order, inside the transaction
that checks the version, so a database is always at a version this list
describes, never half-way. A released migration never changes: a change of
schema is a new step appended to ``MIGRATIONS``. A database whose version is
higher than ``SCHEMA_VERSION`` was made by a newer taskactors and is refused.

``PRAGMA application_id`` marks the file as a taskactors store, so opening
some other application's SQLite database fails instead of adding tables to it.

Column names are the field names of the records in ``_records.py``, so a row
maps to its record through the one converter (``_codec.converter``).
Timestamps are REAL seconds since the epoch; JSON payloads are TEXT, opaque.
There are no foreign keys: every write goes through a command that checks
the task exists, and a constraint failure would fail a whole batch instead
of refusing one command.
"""

from __future__ import annotations

#: "task" in ASCII: the value of ``PRAGMA application_id`` in a taskactors store.
APPLICATION_ID = 0x7461736B

_V1_TABLES: tuple[str, ...] = (
    """
    CREATE TABLE tasks (
        id             TEXT PRIMARY KEY,
        name           TEXT NOT NULL,
        state          TEXT NOT NULL,
        input          TEXT NOT NULL,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL,
        user_id        TEXT,
        thread_id      TEXT,
        parent_id      TEXT,
        root_id        TEXT NOT NULL DEFAULT '',
        metadata       TEXT NOT NULL DEFAULT '{}',
        strategy       TEXT NOT NULL DEFAULT 'enqueue',
        owner          TEXT,
        lease_expires  REAL,
        epoch          INTEGER NOT NULL DEFAULT 0,
        run            INTEGER NOT NULL DEFAULT 1,
        last_seq       INTEGER NOT NULL DEFAULT 0,
        progress_done  REAL,
        progress_total REAL,
        error          TEXT
    )
    """,
    """
    CREATE TABLE events (
        task_id TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        kind    TEXT NOT NULL,
        at      REAL NOT NULL,
        data    TEXT NOT NULL,
        PRIMARY KEY (task_id, seq)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE journal (
        task_id TEXT NOT NULL,
        "index" INTEGER NOT NULL,
        kind    TEXT NOT NULL,
        name    TEXT NOT NULL,
        value   TEXT NOT NULL,
        run     INTEGER NOT NULL,
        at      REAL NOT NULL,
        PRIMARY KEY (task_id, "index")
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE results (
        task_id TEXT PRIMARY KEY,
        value   TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE exceptions (
        task_id   TEXT PRIMARY KEY,
        type      TEXT NOT NULL,
        message   TEXT NOT NULL,
        traceback TEXT NOT NULL,
        retryable INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    # AUTOINCREMENT: an inbox id is never reused, even after the newest item
    # is consumed, so a consumed id can never name a later Request.
    """
    CREATE TABLE inbox (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        input   TEXT NOT NULL,
        at      REAL NOT NULL
    )
    """,
    """
    CREATE TABLE usage (
        task_id       TEXT NOT NULL,
        key           TEXT NOT NULL,
        model         TEXT NOT NULL,
        input_tokens  INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        caller        TEXT,
        thread_id     TEXT,
        user_id       TEXT,
        at            REAL NOT NULL,
        PRIMARY KEY (task_id, key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE nodes (
        node_id       TEXT PRIMARY KEY,
        started_at    REAL NOT NULL,
        lease_expires REAL NOT NULL,
        info          TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE key_states (
        key        TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        expires_at REAL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE workflow_data (
        workflow_id TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       TEXT NOT NULL,
        PRIMARY KEY (workflow_id, key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE deterministic_values (
        workflow_id TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       TEXT NOT NULL,
        PRIMARY KEY (workflow_id, key)
    ) WITHOUT ROWID
    """,
)

# One index per list query. Each ends with (created_at, id) so the "oldest
# first" order of the listings comes from the index, not from a sort.
_V2_INDEXES: tuple[str, ...] = (
    "CREATE INDEX tasks_by_created ON tasks (created_at, id)",
    "CREATE INDEX tasks_by_user ON tasks (user_id, created_at, id)",
    "CREATE INDEX tasks_by_thread ON tasks (thread_id, created_at, id)",
    "CREATE INDEX tasks_by_parent ON tasks (parent_id, created_at, id)",
    # list_pending, list_inflight, list_claimable (state IN pending, running).
    "CREATE INDEX tasks_by_state ON tasks (state, created_at, id)",
    # RenewLeases and ReleaseTasks (owner = ?), the lease test of claims.
    "CREATE INDEX tasks_by_owner ON tasks (owner, lease_expires)",
    "CREATE INDEX inbox_by_task ON inbox (task_id, id)",
    "CREATE INDEX usage_by_thread ON usage (thread_id)",
    "CREATE INDEX nodes_by_lease ON nodes (lease_expires)",
)

#: The indexes of the optional columns hold only the tasks that have one:
#: most tasks have no parent, and many no user or thread, and each index
#: entry is a b-tree insert of every new task (issue #5: a third of the
#: insert of a task row). A query ``column = ?`` still uses them (SQLite
#: reads it as implying ``column IS NOT NULL``).
_V3_PARTIAL_INDEXES: tuple[str, ...] = (
    "DROP INDEX tasks_by_user",
    "DROP INDEX tasks_by_thread",
    "DROP INDEX tasks_by_parent",
    "CREATE INDEX tasks_by_user ON tasks (user_id, created_at, id) WHERE user_id IS NOT NULL",
    "CREATE INDEX tasks_by_thread ON tasks (thread_id, created_at, id) WHERE thread_id IS NOT NULL",
    "CREATE INDEX tasks_by_parent ON tasks (parent_id, created_at, id) WHERE parent_id IS NOT NULL",
)

#: Migration N (1-based) is ``MIGRATIONS[N - 1]``: the statements that take a
#: database from version N - 1 to version N. Append only.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _V1_TABLES,
    _V2_INDEXES,
    _V3_PARTIAL_INDEXES,
)

#: The version of a database this module made or upgraded.
SCHEMA_VERSION = len(MIGRATIONS)
