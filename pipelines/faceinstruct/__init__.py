"""FaceInstruct: labelled face datasets -> instruction samples (issue 15; not built yet)."""
