"""Choosing and running a Beam runner the same way for every facext pipeline."""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

log = logging.getLogger(__name__)
LOCAL = (None, "DirectRunner", "direct", "FnApiRunner")


def local_runner(options: PipelineOptions):
    """The FnApiRunner, with the pipeline options forwarded to its workers.

    Beam's DirectRunner first tries to download and start its Prism runner; facext
    runs batch pipelines locally on the FnApiRunner instead (what DirectRunner falls
    back to), which honours --direct_num_workers and --direct_running_mode
    (in_memory, multi_threading, multi_processing).
    """
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(info))


def is_local(options: PipelineOptions, runner=None) -> bool:
    """True when the pipeline runs on this machine's FnApiRunner (in this process or in
    worker processes beside it), where workers and driver share the disk."""
    if runner is not None:
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        return isinstance(runner, fn_runner.FnApiRunner)
    return options.view_as(StandardOptions).runner in LOCAL


def run_pipeline(build, options: PipelineOptions, runner=None) -> None:
    """Build the graph with `build(p)`, run it to the end, and release the runner."""
    if runner is None and options.view_as(StandardOptions).runner in LOCAL:
        runner = local_runner(options)
    p = beam.Pipeline(runner=runner, options=options)
    build(p)
    result = p.run()
    try:
        state = result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)  # the Dask runner's own client
        if client is not None:
            client.close()
    if state is not None and str(state).rsplit(".", 1)[-1] not in ("DONE", "UNKNOWN"):
        raise RuntimeError(f"pipeline ended in state {state}")


def drive(output, options: PipelineOptions, runner, build, phases, unit: str, kept=None):
    """A pipeline run from its output folder to its summary, the same for every pipeline:
    collect finished batch jobs (`--llm_batch collect`; the run stops here while some are
    still running), check and prepare the output folder, run the graph with a progress
    line on local runners, finalize, print the summary.  `build(p, settings, progress_dir)`
    adds the graph; `phases` are `watch_counts`'s, `unit` what they count; `kept` says
    what survives a Ctrl-C (`RunOutput.interruptible`)."""
    from pipelines.common.progress import watch_counts

    if output.settings.llm_batch == "collect" and not output.collect_batches():
        print(output.batch_summary())
        return output
    settings = output.settings  # after collecting: knows which requests failed in their batch
    output.prepare()
    with output.interruptible(kept):
        progress_dir = output.progress_dir() if is_local(options, runner) else None
        if progress_dir:
            with watch_counts(progress_dir, phases(settings), unit):
                run_pipeline(lambda p: build(p, settings, progress_dir), options, runner)
        else:
            run_pipeline(lambda p: build(p, settings, None), options, runner)
        output.finalize()
    print(output.summary())
    return output
