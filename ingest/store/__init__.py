"""The store layer: where the store is (config, embedded server), how to reach it (connection), the one
runner every statement goes through, the read-only console's guard, schema, uids and errors.
The only package that talks to the `neo4j` driver."""
