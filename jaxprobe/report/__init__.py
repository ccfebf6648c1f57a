"""The presentation layer of a study: figures, tables and the report, drawn from the
results dictionary (the content of ``results.json``) alone. Matplotlib and the standard
library only; nothing here imports JAX or torch."""
from jaxprobe.report._results import ResultsError
from jaxprobe.report.figures import (
    Figure,
    fig_cka_curves,
    fig_cka_heatmap,
    fig_dc1,
    fig_diffusion_snr,
    fig_inter_layer,
    fig_regression,
    render_figures,
)
from jaxprobe.report.html import write_report
from jaxprobe.report.summary import findings
from jaxprobe.report.tables import read_csv, write_csvs

__all__ = [
    "Figure",
    "ResultsError",
    "fig_cka_curves",
    "fig_cka_heatmap",
    "fig_dc1",
    "fig_diffusion_snr",
    "fig_inter_layer",
    "fig_regression",
    "findings",
    "read_csv",
    "render_figures",
    "write_csvs",
    "write_report",
]
