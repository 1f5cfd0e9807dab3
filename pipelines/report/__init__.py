"""Pages a person looks at: the HTML toolkit, and the report over a pipeline run's outputs.

    html      the toolkit (escaping, numbers, tables, cards, inlined images, the page skeleton),
              used by the report and by the search contact sheet
    sections  one renderer per job's output folder (pretraining, anomaly, search, localization)
    page      ReportInputs -> index.html with the key numbers first, plus the raw files

The report reads the files the jobs write (their names are the contract); it imports no job.

May import: epg
"""
