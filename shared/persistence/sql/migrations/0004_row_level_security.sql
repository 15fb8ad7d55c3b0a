-- Tenant isolation as defence in depth: every query of Chime is scoped by tenant in its SQL;
-- these policies hold as well when a role that does not own the tables (the services' role in
-- production, see docs/security.md) reads or writes. The owner (the migrating role) is exempt.
--
-- A transaction sees the rows of the tenant in `chime.tenant` (set per command and per ack);
-- `*` means every tenant (the ticker and operator tools, which act for no tenant). Unset: none.

ALTER TABLE schedules ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON schedules
    USING (current_setting('chime.tenant', true) IN (tenant, '*'))
    WITH CHECK (current_setting('chime.tenant', true) IN (tenant, '*'));

ALTER TABLE actions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON actions
    USING (current_setting('chime.tenant', true) IN (tenant, '*'))
    WITH CHECK (current_setting('chime.tenant', true) IN (tenant, '*'));

ALTER TABLE processed_commands ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON processed_commands
    USING (current_setting('chime.tenant', true) IN (tenant, '*'))
    WITH CHECK (current_setting('chime.tenant', true) IN (tenant, '*'));
