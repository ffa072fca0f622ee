"""Tables for reading (`tables.for_reading`) and the check that a shown, rounded table holds its CSV's numbers."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from layerprune.book import tables
from layerprune.book.table_check import Number, check_tables, missing_from, shown_rows

RESULTS = pd.DataFrame(
    {
        "fraction": [0.0, 0.25, 0.25],
        "n": [0, 2, 2],
        "strategy": ["none", "similarity", "block_influence"],
        "healed": [False, True, False],
        "layers": ["", "11 12 13 14 15 16 17 18", "3 4 5 9"],
        "parameters": [134515008, 99012345, 99012345],
        "loss": [3.586159, 881.756346, 0.000908123],
        "arc_easy": [0.619314, 0.25, 0.5],
        "arc_easy stderr": [0.0433, None, 0.288675],
    }
)


def cells(table: pd.DataFrame) -> list[list[str]]:
    """The text of every body cell of the HTML that `for_reading` renders."""
    html = tables.for_reading(table).to_html()
    rows = re.findall(r"<tr>(.*?)</tr>", html, flags=re.DOTALL)[1:]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]


def test_for_reading_rounds_groups_and_spans():
    shown = cells(RESULTS)
    assert shown[0] == ["0", "0", "none", "no", "–", "134,515,008", "3.59", "0.619 ± 0.043"]
    assert shown[1] == ["0.25", "2", "similarity", "yes", "11-18", "99,012,345", "882", "0.25"]
    assert shown[2][4:] == ["3-5, 9", "99,012,345", "9.08e-04", "0.50 ± 0.29"]


def test_floats_show_three_significant_digits_and_short_decimals_as_written():
    table = pd.DataFrame(
        {
            "normalized loss": [0.999541, 1.003421, 0.996922],
            "perplexity": [258.340114, 1234.5678, 0.0099996],
            "fraction": [0.0, 0.125, 0.5],
            "time / forward": [1.0, 1.836, 0.08117],
        }
    )
    assert cells(table) == [
        ["1.00", "258", "0", "1"],
        ["1.00", "1,235", "0.125", "1.836"],
        ["0.997", "1.00e-02", "0.5", "0.0812"],
    ]


def test_for_reading_hides_the_index_and_puts_units_and_errors_in_the_headers():
    html = tables.for_reading(RESULTS, headers={"n": "layers removed"}).to_html()
    headers = re.findall(r"<th[^>]*>(.*?)</th>", html)
    assert headers == [
        "fraction",
        "layers removed",
        "strategy",
        "healed",
        "layers",
        "parameters",
        "loss (nats)",
        "arc_easy ± stderr",
    ]
    assert "row_heading" not in html and 'class="layerprune-table"' in html


def test_no_shown_number_has_more_than_four_decimals():
    values = [0.123456789, 1.23456789e-5, 0.0099996, 0.000123, -0.5, float("nan")]
    errors = [0.02, 1e-6, 0.001, 1e-5, 0.1, 0.1]
    shown = cells(pd.DataFrame({"x": values, "x stderr": errors, "y": values}))
    assert not [cell for row in shown for cell in row if re.search(r"\d\.\d{5,}", cell)]
    assert [row[1] for row in shown] == ["0.123", "1.23e-05", "1.00e-02", "1.23e-04", "-0.5", "–"]
    assert [row[0] for row in shown] == [
        "0.123 ± 0.020",
        "1.23e-05 ± 1.0e-06",
        "0.0100 ± 0.0010",
        "1.23e-04 ± 1.0e-05",
        "-0.50 ± 0.10",
        "–",
    ]


def test_layer_lists_and_text_are_shown_as_they_are():
    shown = cells(pd.DataFrame({"block": [[2, 3, 4], [7]], "prompt": ["a <b> & c", "12 13"]}))
    assert shown == [["2-4", "a &lt;b&gt; &amp; c"], ["7", "12 13"]]


def test_numbers_match_when_both_can_be_roundings_of_one_value():
    assert Number.parse("0.619").matches(Number.parse("0.619314"))
    assert Number.parse("0.62").matches(Number.parse("0.615"))
    assert Number.parse("882").matches(Number.parse("881.756"))
    assert Number.parse("134,515,008").matches(Number.parse("134515008"))
    assert Number.parse("9.08e-04").matches(Number.parse("0.000908123"))
    assert not Number.parse("0.619").matches(Number.parse("0.6205"))
    assert not Number.parse("134,515,008").matches(Number.parse("134515009"))
    assert not Number.parse("9.08e-04").matches(Number.parse("0.000909"))


def test_each_shown_row_must_match_one_saved_row():
    saved = [[Number.parse("10"), Number.parse("0.5")], [Number.parse("20"), Number.parse("0.7")]]
    assert missing_from(shown_rows("<tr><td>10</td><td>0.5</td></tr><tr><td>20</td><td>0.7</td></tr>"), saved) == []
    assert missing_from(shown_rows("<tr><td>10</td><td>0.7</td></tr>"), saved) == ["0.7"]


def write_chapter(root, table: pd.DataFrame, csv: pd.DataFrame):
    """An executed chapter 04 whose one saving cell shows `table` for reading, and a results dir with `csv`."""
    generated, results = root / "generated", root / "results"
    generated.mkdir(exist_ok=True)
    results.mkdir(exist_ok=True)
    cell = {
        "cell_type": "code",
        "source": ['lp.book.tables.for_reading(lp.book.tables.save(results, out / "04_results.csv"))'],
        "outputs": [{"output_type": "execute_result", "data": {"text/html": tables.for_reading(table).to_html()}}],
    }
    (generated / "04_results.ipynb").write_text(json.dumps({"cells": [cell]}))
    tables.save(csv, results / "04_results.csv")
    return generated, results


def test_a_rounded_table_matches_its_csv(tmp_path):
    check = check_tables(*write_chapter(tmp_path, RESULTS, RESULTS))
    assert check.ok and check.checked == 1, check.mismatches


@pytest.mark.parametrize(
    ("column", "row", "change"),
    [("loss", 0, 0.01), ("arc_easy", 0, -0.002), ("arc_easy stderr", 2, 0.01), ("parameters", 1, 1), ("n", 2, 1)],
)
def test_a_csv_value_changed_by_more_than_the_rounding_is_reported(tmp_path, column, row, change):
    """The changed value no longer rounds to what the page shows (3.586 -> 3.596 is "3.60", not "3.59"); the
    same number elsewhere in the file (another row) does not hide the change."""
    changed = RESULTS.copy()
    changed.loc[row, column] = changed.loc[row, column] + change
    check = check_tables(*write_chapter(tmp_path, RESULTS, changed))
    assert not check.ok and [chapter for chapter, _ in check.mismatches] == ["04_results"]


def test_a_layer_range_matches_the_layers_it_stands_for(tmp_path):
    frame = RESULTS.copy()
    assert check_tables(*write_chapter(tmp_path, frame, frame)).ok
    frame.loc[1, "layers"] = "11 12 13 14 15 16 17 19"
    assert not check_tables(*write_chapter(tmp_path, RESULTS, frame)).ok


def test_integers_and_floats_keep_their_types_in_the_csv(tmp_path):
    saved = tables.save(RESULTS, tmp_path / "x.csv")
    assert saved is RESULTS
    again = pd.read_csv(tmp_path / "x.csv")
    assert again["parameters"].dtype == np.int64
    assert again["loss"].iloc[1] == pytest.approx(881.756346, rel=1e-6)


def test_html_entities_are_not_read_as_numbers():
    from layerprune.book.table_check import shown_rows

    assert shown_rows("<table><tr><td>it&#39;s 0.5 &amp; 2</td></tr></table>")[0][0].value == 0.5
    assert [n.value for n in shown_rows("<tr><td>it&#39;s 0.5</td></tr>")[0]] == [0.5]


def test_a_table_of_text_must_hold_texts_of_the_result_file(tmp_path):
    """The claims' verdict matrix has no numbers: each of its cells must be a value or header of the CSV."""
    ledger = pd.DataFrame({"claim": ["a", "b"], "model": ["m", "m"], "verdict": ["held", "did not hold"]})
    matrix = ledger.pivot(index="claim", columns="model", values="verdict").reset_index().rename_axis(columns=None)
    assert check_tables(*write_chapter(tmp_path, matrix, ledger)).ok
    changed = ledger.assign(verdict=["held", "partly held"])
    check = check_tables(*write_chapter(tmp_path, matrix, changed))
    assert check.mismatches == [("04_results", ["did not hold"])]
