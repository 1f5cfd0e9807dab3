"""The report page and the HTML toolkit (pipelines.report) on their own, without a pipeline run."""

from __future__ import annotations

from pipelines.report.html import Markup, document, html_table
from pipelines.report.page import ReportInputs, write_report
from pipelines.report.sections import learning_cards


def test_report_says_what_is_missing(tmp_path):
    page = write_report(ReportInputs(title="nothing ran", anomaly_dir=tmp_path / "absent"), tmp_path / "report").read_text()
    assert page.count('class="missing"') == 4 and f"No anomaly output in <code>{tmp_path / 'absent'}</code>" in page


def test_tables_escape_text_format_numbers_and_keep_markup():
    table = html_table([{"name": "<b>", "score": 0.123456, "n": 3, "ok": Markup('<span class="ok">y</span>'),
                         "none": None}], digits=4)
    assert "<td>&lt;b&gt;</td>" in table and '<td class="num">0.1235</td>' in table
    assert '<td class="num">3</td>' in table and '<span class="ok">y</span>' in table
    assert '<td class="num">–</td>' in table
    assert html_table([]) == '<p class="what">(none)</p>'
    page = document("a < b", "body {}", "<p>x</p>")
    assert page.startswith("<!DOCTYPE html>") and "<title>a &lt; b</title>" in page and "<style>body {}</style>" in page


def test_learning_cards_read_the_last_epoch_against_chance_and_the_random_init():
    last = {"holdout_pair_auc": "0.74", "holdout_recall_at_k": "0.30", "holdout_recall_chance": "0.25",
            "holdout_collapsed": "0.0"}
    auc, recall = learning_cards(last, {"holdout_pair_auc": 0.51, "holdout_recall_at_k": 0.33})
    assert (auc.value, auc.tone) == ("0.74", "good") and "random init 0.51" in auc.note
    assert recall.tone == "bad" and "random init 0.33" in recall.note  # above chance, below its own init
    auc, recall = learning_cards(last)  # a run that did not measure its init: read against chance
    assert "random init" not in auc.note and recall.tone == "good"
    collapsed, _ = learning_cards({**last, "holdout_collapsed": "1.0"})
    assert collapsed.tone == "bad" and "collapsed" in collapsed.note
    assert learning_cards({"loss": "0.5"}) == []  # a run from before the diagnostics
