"""Writing circuits: the order of work (`writer`), its statements and the rows that feed them
(`statements`, `circuit_rows`), thumbnails, cleanup before a rewrite, the aggregates kept in step
(`aggregates`; their statements `aggregate_statements`; their check, rebuild and upgrade
`aggregate_maintenance`), and group labels."""
