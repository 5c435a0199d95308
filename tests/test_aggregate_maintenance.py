"""Check, rebuild and upgrade of the writer's aggregates (ingest/write/aggregate_maintenance.py): the
line a reader gets on a store written before them.  The store-backed checks are
tests/test_aggregates.py (recompute, rebuild) and tests/test_aggregates_upgrade.py (ensure, the CLI)."""

from __future__ import annotations

from ingest.write.aggregate_maintenance import FIX_COMMAND, missing_message


def test_missing_message_counts_and_names_the_fix():
    one = missing_message({"fashion-resnet": 1})
    assert one.startswith("the store's aggregates are missing for 1 complete circuit (model fashion-resnet;")
    assert f"run `{FIX_COMMAND}`" in one and FIX_COMMAND == "neurflow store rebuild-aggregates" and "\n" not in one
    many = missing_message({"b": 2, "a": 3})
    assert "missing for 5 complete circuits (models a, b;" in many
