-- Only series occurrences have a position (seq); its uniqueness per schedule keeps a successor
-- from being stored twice (insert_actions, ON CONFLICT). Explicit and manual occurrences have
-- none (NULL), yet each had an entry in that index, and a new one with every update that is
-- not HOT (the mark, each ack): one index write in six per write of such a row. The index now
-- holds series occurrences only.
ALTER TABLE actions DROP CONSTRAINT actions_schedule_id_seq_key;
CREATE UNIQUE INDEX actions_series_position ON actions (schedule_id, seq) WHERE seq IS NOT NULL;
