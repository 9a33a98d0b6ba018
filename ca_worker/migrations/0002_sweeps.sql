-- Expiry sweeps (DESIGN §4). A sweep row is written by its trigger together with the
-- sweep.shard messages in the outbox; a shard row is written by whoever processed that
-- shard, in the transaction of its transitions, so a redelivered shard finds it and
-- changes nothing twice.
CREATE TABLE ca.sweeps (
    id uuid PRIMARY KEY,
    trigger text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    as_of timestamptz NOT NULL,
    shards integer NOT NULL CHECK (shards BETWEEN 1 AND 1024),
    ca_transitions integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ca.sweep_shards (
    sweep_id uuid NOT NULL REFERENCES ca.sweeps (id),
    shard integer NOT NULL,
    transitions integer NOT NULL,
    done_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sweep_id, shard)
);
