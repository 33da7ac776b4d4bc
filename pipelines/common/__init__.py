"""What both pipelines use: the Beam stage shell, manifest reading, shard writing, spill,
progress, the run output and report, the rating gate, options and runners."""
