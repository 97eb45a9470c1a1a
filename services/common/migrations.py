"""Database schema, as an append-only list of migrations.

Migration N (1-based) takes a database from ``PRAGMA user_version = N-1`` to N. Never edit
a migration that has shipped; append a new one. Times are integer microseconds since the
Unix epoch (UTC).
"""

MIGRATIONS: list[str] = [
    # 1: shipments, their transition history, idempotency keys, outbox, tasks.
    """
CREATE TABLE shipments (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    substatus TEXT NOT NULL DEFAULT '',
    tracking_number TEXT NOT NULL DEFAULT '',
    status_time_us INTEGER NOT NULL,
    status_times TEXT NOT NULL,
    create_time_us INTEGER NOT NULL,
    update_time_us INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX shipments_by_status ON shipments (status, id);
CREATE TABLE transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    shipment_id TEXT NOT NULL REFERENCES shipments (id),
    event_id TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    from_substatus TEXT NOT NULL,
    to_substatus TEXT NOT NULL,
    occurred_at_us INTEGER NOT NULL,
    record_time_us INTEGER NOT NULL,
    applied INTEGER NOT NULL,
    late INTEGER NOT NULL,
    task_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX transitions_by_shipment ON transitions (shipment_id, seq);
CREATE TABLE idempotency_keys (
    request_id TEXT NOT NULL,
    method TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response BLOB NOT NULL,
    create_time_us INTEGER NOT NULL,
    PRIMARY KEY (method, request_id)
);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    create_time_us INTEGER NOT NULL,
    claimed_until_us INTEGER NOT NULL DEFAULT 0,
    sent_time_us INTEGER
);
CREATE INDEX outbox_unsent ON outbox (sent_time_us, seq);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    input TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    progress_percent INTEGER NOT NULL DEFAULT 0,
    results TEXT NOT NULL DEFAULT '[]',
    error TEXT NOT NULL DEFAULT '',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    create_time_us INTEGER NOT NULL,
    start_time_us INTEGER,
    end_time_us INTEGER,
    update_time_us INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX tasks_by_state ON tasks (state)
""",
    # 2: the lease that makes one outbox relay at a time publish, so events keep their order.
    """
CREATE TABLE outbox_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_us INTEGER NOT NULL
)
""",
    # 3: the replica that ran a task's latest attempt, and a snapshot of every task state
    # change so that WatchTask can stream them all in order.
    """
ALTER TABLE tasks ADD COLUMN worker TEXT NOT NULL DEFAULT '';
CREATE TABLE task_history (
    task_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    snapshot TEXT NOT NULL,
    PRIMARY KEY (task_id, version)
)
""",
    # 4: cache outages seen by writers, so that every status reader verifies its cache hits
    # against the database until the cache has caught up (services/common/cache_outages.py).
    """
CREATE TABLE cache_outages (
    process TEXT PRIMARY KEY,
    opened_us INTEGER NOT NULL,
    checked_us INTEGER NOT NULL,
    closed_us INTEGER
)
""",
    # 5: the trace context headers (W3C traceparent and tracestate, as a JSON object) that
    # the outbox relay publishes with each message; '' when the writer had no trace.
    """
ALTER TABLE outbox ADD COLUMN headers TEXT NOT NULL DEFAULT ''
""",
]
