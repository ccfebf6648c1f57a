"""jaxprobe.report: figures, CSV tables and the report, from a synthetic results dict.

The full report is rendered once per module (six figures); the other tests reuse it or
exercise validation paths that fail before anything is drawn, to keep the file fast.
"""
from __future__ import annotations

import copy
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from scipy import stats

import jaxprobe.report as rep
from jaxprobe.report import ResultsError, figures as figmod
from jaxprobe.report.summary import findings, rankdata, spearman
from tests.jaxprobe.report_fixtures import make_results

ONE_COMBO = (("utterance", "biased"),)


@pytest.fixture(scope="module")
def results():
    return make_results(combos=ONE_COMBO)


@pytest.fixture(scope="module")
def rendered(results, tmp_path_factory):
    """write_report once; the matplotlib Figure behind each saved file is kept for inspection."""
    out = tmp_path_factory.mktemp("report")
    drawn = {}
    real_save = figmod.save

    def spy(fig, out_dir, stem, *args, **kwargs):
        drawn[stem] = fig
        return real_save(fig, out_dir, stem, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figmod, "save", spy)
        paths = rep.write_report(results, out)
    return out, paths, drawn


def _png_dpi(path: Path) -> float:
    """Horizontal resolution from the PNG pHYs chunk, in dots per inch."""
    data = path.read_bytes()
    i = data.index(b"pHYs")
    ppu_x, _, unit = struct.unpack(">IIB", data[i + 4:i + 13])
    assert unit == 1  # metre
    return ppu_x * 0.0254


EXPECTED_STEMS = ("fig2_cka_heatmap", "fig3_regression", "fig4_diffusion_snr", "fig5_inter_layer",
                  "cka_curves", "dc1_trajectories")


@pytest.mark.parametrize("stem", EXPECTED_STEMS)
def test_every_figure_is_png_and_pdf_with_content(rendered, stem):
    out, paths, drawn = rendered
    png, pdf = out / "figures" / f"{stem}.png", out / "figures" / f"{stem}.pdf"
    assert png in paths.values() and pdf in paths.values()
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000
    assert round(_png_dpi(png)) >= 200  # pHYs stores whole pixels per metre
    img = imread(png)[..., :3]
    assert img.shape[1] >= 200 * 3.4  # at least column width at 200 dpi
    ink = (img.mean(axis=-1) < 0.9).mean()  # share of non-white pixels
    assert 0.03 < ink < 0.95, f"{stem}: looks blank or saturated ({ink:.3f} ink)"
    fig = drawn[stem]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert any(ax.get_xlabel() for ax in axes) and any(ax.get_ylabel() for ax in axes)


def test_no_temporary_files_left(rendered):
    out, _, _ = rendered
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_heatmaps_have_labelled_colour_bars(rendered):
    _, _, drawn = rendered
    want = {"fig2_cka_heatmap": "CKA", "fig4_diffusion_snr": "Diffusion distance",
            "fig5_inter_layer": "Diffusion distance"}
    for stem, word in want.items():
        labels = [ax.get_ylabel() for ax in drawn[stem].axes]
        assert any(word in lab for lab in labels), (stem, labels)


def test_heatmap_axes_follow_layer_map(rendered, results):
    _, _, drawn = rendered
    ax = drawn["fig2_cka_heatmap"].axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["Enc1", "Enc2", "Latent", "Dec2", "Dec1", "Refine"]
    assert len(ax.get_xticks()) == len(results["layers"]) == 24
    assert "SNR" in ax.get_ylabel() and "dB" in ax.get_ylabel()


def test_regression_figure_marks_skips_and_poor_fits(rendered, results):
    _, _, drawn = rendered
    fig = drawn["fig3_regression"]
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert {"skip input", "skip output", "poor linear fit"} <= set(legend)
    top = fig.axes[0]
    offsets = [c.get_offsets() for c in top.collections if len(c.get_offsets())]
    skip_in = [i for i, lay in enumerate(results["layers"]) if lay["skip"] == "input"]
    assert any(sorted(o[:, 0].tolist()) == skip_in for o in offsets)


def test_report_html_is_self_contained_and_holds_tables(rendered, results):
    out, paths, _ = rendered
    page = paths["html"].read_text(encoding="utf-8")
    assert not re.search(r"https?://", page)
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "<script" not in page
    for section in ("Appendix: settings", "Data", "Table 1", "Regression of CKA on SNR", "CKA summary",
                    "Summary of findings"):
        assert section in page
    t1 = results["diffusion"]["table1"][0]
    assert f"{t1['spearman']:.3f} [{t1['spearman_low']:.3f}, {t1['spearman_high']:.3f}]" in page
    reg = results["regression"][5]
    assert f"{reg['slope']:.4f} [{reg['slope_low']:.4f}, {reg['slope_high']:.4f}]" in page
    for block, idx in (("Enc1", 0), ("Latent", 3), ("Refine", 3)):
        assert f"<td>{block}.{idx}</td>" in page
    # sections in reading order
    order = [page.index(s) for s in ("<h2>Summary of findings", "<h2>Data", "<h2>Figures", "<h2>Table 1",
                                      "<h2>Regression", "<h2>CKA summary", "<h2>Appendix: settings")]
    assert order == sorted(order)  # findings first, settings last


def test_report_md_links_existing_figures(rendered):
    out, paths, _ = rendered
    md = paths["md"].read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 6 and all((out / link).is_file() for link in links)
    assert "| Enc1 |" in md and "Summary of findings" in md


@pytest.mark.parametrize("name,key", [("cka", "cka"), ("regression", "regression")])
def test_csv_round_trip(rendered, results, name, key):
    _, paths, _ = rendered
    back = rep.read_csv(paths[f"{name}_csv"])
    assert back == results[key]  # same records, same floats (shortest round-trip repr)


def test_table1_csv_round_trip(rendered, results):
    _, paths, _ = rendered
    back = rep.read_csv(paths["table1_csv"])
    want = sorted(results["diffusion"]["table1"], key=lambda r: rep._results.BLOCK_ORDER.index(r["block"]))
    assert back == want


def _drop(results, path):
    r = copy.deepcopy(results)
    node = r
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    return r


@pytest.mark.parametrize("path,words", [
    (("layers",), ["'layers'"]),
    (("regression", 3, "slope_low"), ["'slope_low'", "results['regression'][3]"]),
    (("cka", 0, "high"), ["'high'", "results['cka'][0]"]),
    (("diffusion", "table1"), ["'table1'", "results['diffusion']"]),
    (("diffusion", "inter_layer"), ["'inter_layer'"]),
    (("data", "noises"), ["'noises'", "results['data']"]),
    (("settings",), ["'settings'"]),
])
def test_missing_key_names_it(results, tmp_path, path, words):
    bad = _drop(results, path)
    with pytest.raises(ResultsError) as err:
        rep.write_report(bad, tmp_path, figures=[])
    for w in words:
        assert w in str(err.value)
    assert not (tmp_path / "report.html").exists()


def test_missing_intra_layer_entry_names_layer(results, tmp_path):
    name = results["layers"][7]["name"]
    bad = _drop(results, ("diffusion", "intra_layer", name))
    with pytest.raises(ResultsError, match=re.escape(repr(name))):
        rep.fig_dc1(bad, tmp_path)


def test_nan_is_refused(results, tmp_path):
    bad = copy.deepcopy(results)
    bad["cka"][10]["estimate"] = float("nan")
    with pytest.raises(ResultsError, match=r"results\['cka'\]\[10\]\['estimate'\] must be finite"):
        rep.fig_cka_heatmap(bad, tmp_path)


def test_unknown_combo_lists_available(results, tmp_path):
    with pytest.raises(ResultsError, match="available: utterance/biased"):
        rep.fig_regression(results, tmp_path, protocol="centroid", estimator="debiased")


def test_secondary_combo_gets_its_own_file(tmp_path):
    r = make_results(combos=(("utterance", "biased"), ("centroid", "debiased")))
    f = rep.fig_cka_heatmap(r, tmp_path, protocol="centroid", estimator="debiased")
    assert f.png.name == "fig2_cka_heatmap_centroid_debiased.png" and f.pdf.is_file()
    assert "debiased" in f.caption


def test_fig5_uses_available_subset_and_says_what_is_missing(tmp_path):
    r = make_results(combos=ONE_COMBO, inter_snrs=[-10.0, 0.0, 30.0])
    f = rep.fig_inter_layer(r, tmp_path)
    assert "at -10, 0, 30 dB" in f.caption and "Not in the results: -5, 10, 20 dB" in f.caption


def test_null_intervals_print_as_no_interval(results, tmp_path):
    r = copy.deepcopy(results)
    for rec in r["cka"][:9]:  # the first layer, every SNR
        rec["low"] = rec["high"] = None
    for k in ("slope_low", "slope_high"):
        r["regression"][0][k] = None
    for rec in r["diffusion"]["table1"]:
        for k in ("spearman_low", "spearman_high", "r2_low", "r2_high"):
            del rec[k]
    f = rep.fig_cka_curves(r, tmp_path, formats=("png",))
    assert f.pdf is None and f.png.is_file() and not (tmp_path / "cka_curves.pdf").exists()
    lines = findings(r)
    assert any("Enc1 0.94 [no interval]" in s or re.search(r"Enc1 0\.\d\d \[no interval\]", s) for s in lines)
    from jaxprobe.report import tables
    _, rows = tables.regression_rows(r)
    assert "[no interval]" in rows[0][3] and "[no interval]" not in rows[1][3]
    _, t1 = tables.table1_rows(r)
    assert all("[no interval]" in row[1] for row in t1)


def test_inter_layer_block_labels_are_used(results, tmp_path):
    r = copy.deepcopy(results)
    for rec in r["diffusion"]["inter_layer"].values():
        rec["blocks"] = ["Enc1", "Enc2", "Dec2", "Dec1", "Refine"]
    entries = rep._results.inter_layer(r)
    assert entries[0][1] == ["Enc1", "Enc2", "Dec2", "Dec1", "Refine"]
    assert "Enc1-Dec2" in findings(r)[-1]


def test_analysis_notes_are_reported(results, tmp_path):
    r = copy.deepcopy(results)
    r["diffusion"]["notes"] = ["epsilon fell back to the BGH rule for layer X"]
    r["diffusion"]["inter_layer_excluded"] = [r["layers"][8]["name"]]
    r["data"]["items"] = [["utt-000", 0], ["utt-001", 1]]
    paths = rep.write_report(r, tmp_path, figures=[])
    page = paths["html"].read_text(encoding="utf-8")
    assert "Notes from the analysis" in page and "BGH rule for layer X" in page
    assert "Excluded from the inter-layer diffusion maps: Latent.0." in page
    assert "(utt-000, 0), (utt-001, 1)" in page
    assert "data:image/png;base64," not in page


def test_formats_must_include_png(results, tmp_path):
    with pytest.raises(ValueError, match="formats"):
        rep.fig_dc1(results, tmp_path, formats=("pdf",))


def test_spearman_matches_scipy_with_ties(rng):
    x = rng.integers(0, 5, 40).astype(float)
    y = rng.integers(0, 7, 40).astype(float)
    np.testing.assert_allclose(rankdata(x), stats.rankdata(x))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)


def test_findings_count_fits_and_quote_intervals(results):
    lines = findings(results)
    r2 = [r["r2"] for r in results["regression"]]
    assert any(f"{sum(v > 0.95 for v in r2)} of 24 linear fits" in s for s in lines)
    depth_rho = stats.spearmanr(np.arange(24), [r["slope"] for r in results["regression"]]).statistic
    assert any(f"ρ = {depth_rho:.2f} over 24 layers" in s for s in lines)
    rho = np.median([r["spearman"] for r in results["diffusion"]["table1"]])
    assert any(f"median Spearman ρ over 6 blocks = {rho:.3f}" in s for s in lines)
    assert not any(s.startswith("DC1 tracks") for s in lines)  # sentences describe, they do not presume
    assert any(re.search(r"Enc1 0\.\d\d \[0\.\d\d, 0\.\d\d\]", s) for s in lines)
    # the fixture's skip inputs are the steepest of their blocks, clear of the other layers
    d20 = next(r for r in results["regression"] if r["layer"] == results["layers"][12]["name"])
    want = (f"Dec2.0 {d20['slope']:.4f} [{d20['slope_low']:.4f}, {d20['slope_high']:.4f}] is the steepest of "
            "its block (its interval overlaps those of 0 of the other 3)")
    assert any(want in s for s in lines)


def test_given_summary_is_used_verbatim(results):
    r = dict(results, summary=["A finding.", "Another."])
    assert findings(r) == ["A finding.", "Another."]


def test_cli_names_the_missing_key(results, tmp_path, capsys):
    from jaxprobe.report.__main__ import main

    bad = _drop(results, ("diffusion", "table1"))
    path = tmp_path / "results.json"
    path.write_text(__import__("json").dumps(bad))
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    assert "'table1'" in capsys.readouterr().err
    assert main([str(tmp_path / "absent.json")]) == 2


def test_import_does_not_load_torch():
    code = "import sys, jaxprobe.report; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_rerender_with_nothing_changed_draws_no_figure(results, tmp_path, monkeypatch):
    """Figures are cached by their inputs: a second report with the same results draws none,
    a copied folder keeps its cache, and a changed number redraws."""
    import shutil

    rep.write_report(results, tmp_path / "a", formats=("png",))
    calls = []
    real_save = figmod.save
    monkeypatch.setattr(figmod, "save", lambda fig, *a, **k: calls.append(a[1]) or real_save(fig, *a, **k))
    lines = []
    paths = rep.write_report(results, tmp_path / "a", formats=("png",), log=lines.append)
    assert calls == [] and any("6 of 6 figures unchanged" in ln for ln in lines)
    assert sum(k.startswith("figures/") for k in paths) == 6
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    rep.write_report(results, tmp_path / "b", formats=("png",))
    assert calls == []
    changed = copy.deepcopy(results)
    changed["cka"][0]["estimate"] = 0.123
    rep.write_report(changed, tmp_path / "b", formats=("png",))
    assert len(calls) == 6  # every figure reads the results: all redrawn
    (tmp_path / "b" / "figures" / "fig3_regression.png").unlink()
    calls.clear()
    rep.write_report(changed, tmp_path / "b", formats=("png",))
    assert calls == ["fig3_regression"]  # a missing file is drawn again


def test_warnings_open_the_summary(results, tmp_path):
    r = copy.deepcopy(results)
    r["warnings"] = ["The 'noise' bootstrap of the utterance protocol resamples 2 noise types: only 3 distinct "
                     "resamples exist for 1000 replicates"]
    r["bootstrap"] = {"designs": [{"protocol": "utterance", "design": "noise", "unit": "noise types", "n_units": 2,
                                   "distinct_resamples": 3, "n_boot": 1000, "too_few": True}]}
    paths = rep.write_report(r, tmp_path, figures=[])
    page = paths["html"].read_text(encoding="utf-8")
    first = page.index("<h2>Summary of findings")
    assert first < page.index("Warning: The &#x27;noise&#x27; bootstrap") < page.index("<h2>Data")
    assert "<h2>Bootstrap designs: distinct resamples" in page and "too few: intervals mean little" in page
    assert page.index("<h2>Appendix: settings") > page.index("<h2>CKA summary")


def test_one_html_renderer_for_every_page(tmp_path):
    """report.html of the sweep, the comparison and the hear study comes from html.render_html: the
    sections in order, text escaped, and the Files paragraph either the CSVs next to the report or the
    caller's ``files_note`` (escaped as a whole)."""
    from jaxprobe.report.html import render_html

    secs = [("list", "Summary <1>", ["a < b", "c & d"]), ("table", "Data", (["k", "v"], [["x", "1 [0, 2]"]])),
            ("figures", "Figures", [])]
    csvs = {"cka": tmp_path / "cka.csv", "regression": tmp_path / "sub" / "regression.csv"}
    page = render_html("T & U", secs, tmp_path, csvs)
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</p></body></html>")
    assert "<title>T &amp; U</title>" in page and "<h1>T &amp; U</h1>" in page
    assert page.index("<h2>Summary &lt;1&gt;</h2>") < page.index("<h2>Data</h2>") < page.index("<h2>Figures</h2>")
    assert "<li>a &lt; b</li><li>c &amp; d</li>" in page and '<td class="num">1 [0, 2]</td>' in page
    assert page.endswith('<p class="small">Long-format tables next to this report: cka.csv, sub/regression.csv; '
                         "figure files (PNG, and PDF where asked for) in figures/.</p></body></html>")
    other = render_html("T & U", secs, tmp_path, csvs, files_note="x.csv, wavs/<model>/; figures in figures/.")
    assert other.endswith('<p class="small">x.csv, wavs/&lt;model&gt;/; figures in figures/.</p></body></html>')
    assert other.rsplit("<h2>Files</h2>", 1)[0] == page.rsplit("<h2>Files</h2>", 1)[0]
