"""Per-pair analysis stages and (later) the Beam pipelines that wrap them."""
