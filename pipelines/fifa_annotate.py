"""FiFa-Instruct: real/fake pairs -> grounded, explained samples of 11 tasks in Arrow shards.

    beam run pipelines/fifa_annotate.py [--input MANIFEST] [--output DIR] [options]
    python -m pipelines.fifa_annotate ...

The thin driver over `pipelines.fifa` (as Beam's juliaset example is over its package):
the graph, read manifest -> load and validate pair -> face geometry -> artifact analysis
-> concepts and evidence -> describe -> rate -> make samples -> write, is in
`pipelines/fifa/pipeline.py`.  With no options it runs on the bundled sample pairs.
"""

from pipelines.fifa.pipeline import FifaOptions, build, run

__all__ = ["FifaOptions", "build", "run"]

if __name__ == "__main__":
    run()
