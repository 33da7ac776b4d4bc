"""FaceInstruct: labelled face datasets (images and video) -> instruction samples of five
tasks (expression, action units, attributes, age, deepfake) in Arrow shards.

    beam run pipelines/faceinstruct_build.py --source dfew=/data/DFEW --source celeba=/data/CelebA \\
        --output out/faceinstruct [options]
    python -m pipelines.faceinstruct_build ...

The thin driver over `pipelines.faceinstruct`: the graph, read labels -> crop faces and
landmarks -> describe -> rate -> make samples -> write, is in
`pipelines/faceinstruct/pipeline.py`.  With neither `--source` nor `--input` it runs on
the bundled sample datasets.
"""

from pipelines.faceinstruct.pipeline import FaceInstructOptions, build, run

__all__ = ["FaceInstructOptions", "build", "run"]

if __name__ == "__main__":
    run()
