"""The report of `jaxprobe hear`: the ASR paper's Table 2 and Figs. 2-4, drawn from results.json alone.

Figures: EER per layer (Fig. 2), probe mel spectrograms per layer, clean vs noisy input, baseline vs
robust (Fig. 3), STOI per layer (Fig. 4), L1 reconstruction error per layer. Tables: the recognisers'
CER/WER, Table 2 (EER per layer x model x condition x regime), STOI and L1 with bootstrap intervals
over utterances. Findings are computed from the numbers, with the paper's expectations checked
one by one and reported whether or not they hold.

The pieces: ``figures`` (Figs. 2-4), ``tables`` (tables and CSVs), ``summary`` (findings: sentences from the
numbers) and ``page`` (report.md, report.html), over ``_records`` (the view of results.json they share).
"""
from jaxprobe.report.hear._records import MODEL_NAMES, HearResultsError, human_view, is_hear_results
from jaxprobe.report.hear.figures import (COND_COLORS, REGIME_STYLE, fig_eer, fig_eer_human, fig_l1, fig_mels,
                                          fig_pesq, fig_stoi, fig_stoi_human, render_hear_figures)
from jaxprobe.report.hear.summary import findings
from jaxprobe.report.hear.page import write_hear_report
from jaxprobe.report.hear.tables import (asr_rows, contrast_rows, data_rows, metric_rows, reference_rows,
                                         settings_rows, table2_rows, write_hear_csvs)

__all__ = ["COND_COLORS", "MODEL_NAMES", "REGIME_STYLE", "HearResultsError", "asr_rows", "contrast_rows", "data_rows",
           "fig_eer", "fig_eer_human", "fig_l1", "fig_mels", "fig_pesq", "fig_stoi", "fig_stoi_human", "findings",
           "human_view", "is_hear_results", "metric_rows", "reference_rows", "render_hear_figures", "settings_rows",
           "table2_rows", "write_hear_csvs", "write_hear_report"]
