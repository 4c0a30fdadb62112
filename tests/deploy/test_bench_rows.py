"""The benches write events straight into usage.events (COPY): their rows must have every column the
table has, in the table's order, or `make bench` breaks when a migration adds one."""

from bench import ingest, reads
from tollgate.services.usage.repository.ingest import COLUMNS


def test_the_ingest_bench_stores_a_value_for_every_events_column():
    rows = ingest._rows(3)
    assert all(len(ingest._stored_row(row)) == len(COLUMNS) for row in rows)


def test_the_reads_bench_copies_a_value_for_every_events_column():
    lines = reads._lines(1_800_000_000_000_000, 0, 3).splitlines()
    assert len(lines) == 3
    assert all(len(line.split("\t")) == len(COLUMNS) for line in lines)
