CREATE TABLE dead_letters (
    id integer primary key,
    destination text not null,
    position integer not null,
    message_id text not null,
    type text not null,
    event text,
    source_id text,
    received_at text,
    first_attempt_at text not null,
    dead_at text not null,
    reason text not null,
    attempts text not null,
    payload text not null,
    redriven_at text,
    redrive_attempts integer not null default 0
);
CREATE INDEX dead_letters_by_destination on dead_letters (destination, redriven_at, id);
