"""BENCHMARKS.md is what `bench/report.py` renders from `bench/benchmarks.md.in` and the
committed `bench/results/*.json`: its figures cannot drift from the JSON."""

from pathlib import Path

import pytest

from bench import report


@pytest.fixture(scope="module")
def template() -> str:
    return report.TEMPLATE.read_text()


@pytest.fixture
def results() -> dict:
    """Fresh per test: some tests change figures."""
    return report.load_results()


def test_benchmarks_md_is_what_the_results_render(template, results):
    assert report.OUTPUT.read_text() == report.render(template, results), (
        "BENCHMARKS.md is not what bench/results renders: run `python -m bench.report`"
    )


def test_check_exits_1_on_a_hand_edit(monkeypatch, tmp_path: Path):
    output = tmp_path / "BENCHMARKS.md"
    output.write_text(report.OUTPUT.read_text())
    monkeypatch.setattr(report, "OUTPUT", output)
    assert report.main(["--check"]) == 0
    output.write_text(output.read_text().replace("| build |", "| build (edited) |"))
    assert report.main(["--check"]) == 1


@pytest.mark.parametrize(
    ("field", "error"),
    [
        ("{{ engine.full.no_such_figure | .1f }}", "no_such_figure"),
        ('{{ engine.mask_encoding_1008["no such mask"].rle.median_ms }}', "no such mask"),
        ("{{ no_such_benchmark.wall_seconds }}", "no_such_benchmark"),
        ("{{ interactive.runs[99].replicas }}", "index out of range"),
    ],
)
def test_a_field_naming_a_missing_key_fails_to_render(field: str, error: str, results):
    with pytest.raises(ValueError, match=error):
        report.render(f"before {field} after", results)


def test_the_template_fails_without_a_figure_it_reads(template, results):
    del results["engine"]["full"]["sam3_predict_inst_one_click"]
    with pytest.raises(ValueError, match="sam3_predict_inst_one_click"):
        report.render(template, results)


def test_changing_a_figure_changes_the_text(template, results):
    committed = report.render(template, results)
    results["engine"]["full"]["decode_one_click"]["median_ms"] = 12345.0
    results["interactive"]["runs"][1]["errors_by_status"] = {"404": 7, "503": 2}
    changed = report.render(template, results)
    assert changed != committed
    assert "| decode one click (median) |" in changed
    assert "12345 ms; " in changed
    assert "| 7 \N{MULTIPLICATION SIGN} 404, 2 \N{MULTIPLICATION SIGN} 503 |" in changed


@pytest.mark.parametrize(
    ("ours", "sam3", "word"), [(100.0, 200.0, "faster"), (200.0, 100.0, "slower")]
)
def test_a_comparison_follows_the_figures(template, results, ours: float, sam3: float, word: str):
    full = results["engine"]["full"]
    full["decode_one_click"]["median_ms"] = ours
    full["sam3_predict_inst_one_click"]["median_ms"] = sam3
    assert f"decodes a click {word} than `predict_inst`" in report.render(template, results)


def test_a_field_reads_results_in_a_generator_expression(results):
    assert report.render("{{ sum(side for side in engine.image) }}", results) == str(
        sum(results["engine"]["image"])
    )


@pytest.mark.parametrize("expression", ['open("/etc/hostname")', '__import__("os")', "print(1)"])
def test_a_field_has_no_builtins_but_the_helpers(expression: str, results):
    with pytest.raises(ValueError, match="NameError"):
        report.render(f"{{{{ {expression} }}}}", results)
