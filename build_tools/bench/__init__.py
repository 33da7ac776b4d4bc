"""`facext bench ...`: numbers of the analysis, the pipeline, the LLM layer and publishing."""
