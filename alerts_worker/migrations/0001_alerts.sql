-- Subscriptions, their pending digest items, and deliveries (outbox style) with attempts.
CREATE TABLE alerts.subscriptions (
    id text PRIMARY KEY,
    event text NOT NULL,
    condition text,
    channel text NOT NULL CHECK (channel IN ('webhook', 'email', 'teams', 'slack')),
    target text NOT NULL,
    secret text,
    digest text,
    created_at timestamptz NOT NULL
);

-- Events kept for a digest until its period ends (due_at).
CREATE TABLE alerts.digest_items (
    subscription_id text NOT NULL REFERENCES alerts.subscriptions (id) ON DELETE CASCADE,
    event_id text NOT NULL,
    due_at timestamptz NOT NULL,
    item jsonb NOT NULL,
    seq bigserial,
    PRIMARY KEY (subscription_id, event_id)
);
CREATE INDEX digest_items_due ON alerts.digest_items (due_at);

-- One row per notification to send; message_id (the CloudEvent id) is the
-- idempotency key the receiver sees on every attempt.
CREATE TABLE alerts.deliveries (
    id bigserial PRIMARY KEY,
    subscription_id text NOT NULL REFERENCES alerts.subscriptions (id) ON DELETE CASCADE,
    message_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('event', 'digest', 'test')),
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    UNIQUE (subscription_id, message_id)
);
CREATE INDEX deliveries_due ON alerts.deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE alerts.attempts (
    delivery_id bigint NOT NULL REFERENCES alerts.deliveries (id) ON DELETE CASCADE,
    number integer NOT NULL,
    at timestamptz NOT NULL,
    ok boolean NOT NULL,
    error text,
    PRIMARY KEY (delivery_id, number)
);
