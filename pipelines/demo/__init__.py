"""The main job (``jobs/demo.py``, ``make demo``): synthetic footage through every stage to a report page.

    config  MainJobConfig and DemoLayout (where each stage writes)
    stages  DemoRun: one method per stage, each reusing finished output
    job     run_main, the report's inputs, the closing lines

May import: pipelines.downstream, pipelines.report, pipelines.score, pipelines.train, pipelines.ingest,
pipelines.runtime, pipelines.media, pipelines.synthetic, epg
"""
