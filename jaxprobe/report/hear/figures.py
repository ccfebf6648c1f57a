"""The hear report's figures: EER, STOI, PESQ and L1 per layer (Figs. 2 and 4, with bands), the probes'
mel spectrograms (Fig. 3), and Figs. 2 and 4 again for the human speakers."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxprobe.report.hear import _records as R
from jaxprobe.report._style import PAGE_WIDTH, new_figure, save, style
from jaxprobe.report.figures import Figure

COND_COLORS = {"clean": "#1a1a1a", 0: "#2c7bb6", 1: "#7b3294", 2: "#d7191c", 3: "#fdae61", 4: "#1b9e3a"}
REGIME_STYLE = {"baseline": {"ls": "--", "marker": "o", "mfc": "white"}, "robust": {"ls": "-", "marker": "s"}}


def _cond_color(results, c: str) -> str:
    conds = [x for x in R.conditions(results) if x != "clean"]
    return COND_COLORS["clean"] if c == "clean" else COND_COLORS[conds.index(c) % 5]


def _per_layer_figure(results, out_dir, *, field, stem, title, ylabel, caption, formats, bands=False):
    models = R.models(results)
    with style():
        fig = new_figure(PAGE_WIDTH, 2.5)
        axes = fig.subplots(1, len(models), squeeze=False)[0]
        for ax, model in zip(axes, models):
            labels = ["mel"] + R.layers(results, model)
            x = np.arange(len(labels))
            for regime in R.regimes(results):
                for cond in R.conditions(results):
                    def series(f):  # the "mel" reference, then every layer; NaN where absent
                        vals = [R.ref(results, model, regime, "mel", cond, f)]
                        vals += [R.cell(results, model, regime, lay, cond, f) for lay in labels[1:]]
                        return np.array([np.nan if v is None else v for v in vals], float)

                    st = REGIME_STYLE.get(regime, {})
                    col = _cond_color(results, cond)
                    ax.plot(x, series(field), color=col, ls=st.get("ls", "-"), marker=st.get("marker", "o"),
                            mfc=st.get("mfc", col), ms=3, lw=1.0, label=f"{regime}, {R.cond_label(cond)}")
                    if bands:
                        ax.fill_between(x, series(f"{field}_low"), series(f"{field}_high"), color=col, alpha=0.08, lw=0)
            ax.axvline(0.5, color="#999", lw=0.5, ls=":")
            ax.set_xticks(x, ["mel (ref.)"] + labels[1:], rotation=45 if len(labels) > 6 else 0,
                          ha="right" if len(labels) > 6 else "center", rotation_mode="anchor")
            ax.set_title(R.MODEL_NAMES.get(model, model))
            ax.set_xlabel("layer (input → output)")
            ax.set_ylabel(ylabel)
            ax.grid(axis="y", lw=0.3, alpha=0.5)
            if field == "eer":
                ax.set_ylim(0, max(55.0, ax.get_ylim()[1]))
        handles, labs = axes[0].get_legend_handles_labels()
        fig.legend(handles, labs, loc="outside right center", ncol=1)
        png, pdf = save(fig, out_dir, stem, formats)
    return Figure(stem, title, png, pdf, caption)


def fig_eer(results, out_dir, formats=("png", "pdf")) -> Figure:
    return _per_layer_figure(
        results, out_dir, field="eer", stem="fig2_eer_per_layer", title="Fig. 2 — speaker-verification EER per layer",
        ylabel="EER (%)", formats=formats, bands=True,
        caption="Equal error rate of speaker verification by the pretrained GE2E judge (Resemblyzer's LSTM encoder, "
                "trained on LibriSpeech and VoxCeleb; results.json 'speaker.judge') on speech reconstructed from each layer "
                "(probe → mel → pseudo-inverse → Griffin-Lim), per input condition; solid: robust recogniser, "
                "dashed: baseline; bands: bootstrap intervals from resampling utterances. 'mel (ref.)': Griffin-Lim "
                "from the recogniser's own input log-mel, the best a probe can reach through this vocoder. Higher "
                "EER = less speaker information left.")


def fig_stoi(results, out_dir, formats=("png", "pdf")) -> Figure:
    return _per_layer_figure(
        results, out_dir, field="stoi", stem="fig4_stoi_per_layer", title="Fig. 4 — STOI per layer",
        ylabel="STOI", formats=formats, bands=True,
        caption="STOI of the reconstructed speech against the clean utterance window, per layer and input "
                "condition (mean over utterances; bands: bootstrap interval over utterances). Solid: robust, dashed: "
                "baseline. With noisy input, a layer that has discarded the noise reconstructs cleaner speech.")


def fig_pesq(results, out_dir, formats=("png", "pdf")) -> Figure:
    return _per_layer_figure(
        results, out_dir, field="pesq", stem="fig4b_pesq_per_layer", title="Fig. 4b — wide-band PESQ per layer",
        ylabel="PESQ (WB, MOS-LQO)", formats=formats, bands=True,
        caption="Wide-band PESQ (ITU-T P.862.2, the pesq package) of the reconstructed speech against the clean "
                "utterance window, per layer and input condition (mean over the items PESQ could score; items it "
                "cannot score, e.g. silent windows, are counted in the tables and excluded; bands: bootstrap "
                "interval over utterances). Solid: robust, dashed: baseline.")


def fig_l1(results, out_dir, formats=("png", "pdf")) -> Figure:
    return _per_layer_figure(
        results, out_dir, field="l1", stem="fig_l1_per_layer", title="Probe L1 reconstruction error per layer",
        ylabel="L1 (log-mel, nats)", formats=formats, bands=True,
        caption="Mean absolute error between the probe's log-mel and its target (the recogniser's input log-mel, "
                "unless the config says clean), per layer and condition, on the listening set; bands: bootstrap "
                "intervals over utterances. The 'mel' reference is 0 by construction.")


def fig_mels(results, out_dir, formats=("png", "pdf"), source=None) -> Figure | None:
    """Fig. 3: the example utterance's mel spectrograms, clean reference and noisy input, and the
    probes' outputs at a few layers, baseline vs robust."""
    rep = results["settings"]["report"]
    model = rep["fig3_model"]
    snr = f"{float(rep['fig3_snr']):g}"
    if snr not in R.conditions(results):
        snr = [c for c in R.conditions(results) if c != "clean"][-1]
    regimes = [r for r in R.regimes(results) if f"{model}-{r}" in results.get("mel_examples", {})]
    if not regimes:
        return None
    layers = [lay for lay in rep["fig3_layers"] if lay in R.layers(results, model)] or R.layers(results, model)[-3:]
    out_dir = Path(out_dir)
    root = Path(source) if source is not None else (out_dir.parent if out_dir.name == "figures" else out_dir)
    panels = []
    for regime in regimes:
        ex = results["mel_examples"][f"{model}-{regime}"]
        with np.load(root / ex["file"], allow_pickle=False) as z:
            arr = {k: z[k] for k in z.files}
        conds = [c for _, c in ex["items"]]
        ci, ni = conds.index("clean"), conds.index(snr)
        row = [("clean input", arr["input"][ci]), (f"noisy input ({snr} dB)", arr["input"][ni])]
        row += [(f"{regime}: {lay}", arr[lay][ni]) for lay in layers]
        panels.append(row)
        hop = ex["hop_length"]
    vmin = min(float(np.percentile(p[1], 2)) for row in panels for p in row)
    vmax = max(float(np.max(p[1])) for row in panels for p in row)
    with style():
        ncol = len(panels[0])
        fig = new_figure(PAGE_WIDTH, 1.25 * len(panels) + 0.4)
        axes = fig.subplots(len(panels), ncol, squeeze=False, sharex=True, sharey=True)
        im = None
        for i, row in enumerate(panels):
            for j, (title, m) in enumerate(row):
                ax = axes[i, j]
                t = m.shape[0] * hop / 16000
                im = ax.imshow(m.T, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                               extent=(0, t, 0, m.shape[1]))
                ax.set_title(title, fontsize=7)
                if j == 0:
                    ax.set_ylabel("mel bin")
                if i == len(panels) - 1:
                    ax.set_xlabel("time (s)")
        fig.colorbar(im, ax=axes, shrink=0.8, label="log-mel (nats)")
        stem = "fig3_mel_per_layer"
        png, pdf = save(fig, out_dir, stem, formats)
    return Figure(stem, f"Fig. 3 — what {R.MODEL_NAMES.get(model, model)} layers hear", png, pdf,
                  f"Log-mel spectrograms of one listening utterance: the clean and the noisy ({snr} dB) recogniser input, "
                  f"and the probe reconstructions from layers {', '.join(layers)} of the {' and '.join(regimes)} "
                  f"{R.MODEL_NAMES.get(model, model)} given the noisy input (rows). Common colour scale.")


def render_hear_figures(results, out_dir, formats=("png", "pdf"), source=None) -> list[Figure]:
    figs = [fig_eer(results, out_dir, formats), fig_mels(results, out_dir, formats, source),
            fig_stoi(results, out_dir, formats), fig_l1(results, out_dir, formats)]
    if any(r.get("pesq") is not None for r in results.get("probe", [])):  # older results have no PESQ
        figs.insert(3, fig_pesq(results, out_dir, formats))
    hv = R.human_view(results)
    if hv is not None:
        figs += [fig_eer_human(hv, out_dir, formats), fig_stoi_human(hv, out_dir, formats)]
    return [f for f in figs if f is not None]


def fig_eer_human(view, out_dir, formats=("png", "pdf")) -> Figure:
    """Fig. 2 for the human speakers of the listening set (``view``: :func:`R.human_view`)."""
    return _per_layer_figure(
        view, out_dir, field="eer", stem="fig2h_eer_per_layer_human",
        title="Fig. 2 (human speakers) — speaker-verification EER per layer", ylabel="EER (%)", formats=formats,
        bands=True,
        caption="As Fig. 2, on the held-out human speakers of the listening set (studio prompts, "
                f"{len(view['data'].get('listen_human_speakers') or [])} speakers), judged by the same pretrained "
                "GE2E judge. The recognisers and probes never saw human speech: read with the note in this section.")


def fig_stoi_human(view, out_dir, formats=("png", "pdf")) -> Figure:
    return _per_layer_figure(
        view, out_dir, field="stoi", stem="fig4h_stoi_per_layer_human", title="Fig. 4 (human speakers) — STOI per layer",
        ylabel="STOI", formats=formats, bands=True,
        caption="As Fig. 4, on the held-out human speakers of the listening set.")

