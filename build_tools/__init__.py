"""What a person runs: the facext and beam command lines, validation, rendering, the report,
publishing, benchmarks and the local protocol servers."""
