-- Retention (CHIME_RETENTION_DAYS): the ticker deletes finished occurrences due before a
-- cutoff, oldest first, a batch at a time. This index finds them without reading what is
-- pending or in flight. A row enters it when it finishes: that update changes `state`, which
-- other indexes' predicates name, so it is not a HOT update anyway; claims (HOT) change
-- neither `state` nor `due_at`.
CREATE INDEX actions_finished_due ON actions (due_at)
    WHERE state IN ('SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED');
