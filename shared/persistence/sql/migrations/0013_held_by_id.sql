-- Occurrences held behind another of their schedule (BUFFER_ONE), by id: the acker asks which of
-- a batch's occurrences are held before applying it (held_among). An ack naming one is decided
-- by when the ack that releases it comes, so that tenant's acks are applied one by one, in
-- order. Few rows are held at once (at most one a schedule), so the index stays small; holding
-- and releasing are rare updates, and no fire or ack changes `held`.
CREATE INDEX actions_held ON actions (id) WHERE held;
