-- What the services' role may do: read and write rows, nothing else (no DDL, not the owner,
-- so the row-level security policies apply to it). `chime migrate` runs this after the
-- migrations when CHIME_DATABASE_SERVICE_ROLE names the role; {role} is a checked identifier.
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};
REVOKE ALL ON chime_schema_migrations FROM {role};
GRANT SELECT ON chime_schema_migrations TO {role};
