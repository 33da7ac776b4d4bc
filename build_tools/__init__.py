"""Command line, sample data, rendering, benchmarks and (later) shards and publishing."""
