"""The report of `jaxprobe hear`: the ASR paper's Table 2 and Figs. 2-4, drawn from results.json alone.

Figures: EER per layer (Fig. 2), probe mel spectrograms per layer, clean vs noisy input, baseline vs
robust (Fig. 3), STOI per layer (Fig. 4), L1 reconstruction error per layer. Tables: the recognisers'
CER/WER, Table 2 (EER per layer x model x condition x regime), STOI and L1 with bootstrap intervals
over utterances. Findings are computed from the numbers, with the paper's expectations checked
one by one and reported whether or not they hold.
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import numpy as np

from jaxprobe.report._style import PAGE_WIDTH, new_figure, save, style
from jaxprobe.report.figures import Figure
from jaxprobe.report.html import CSS, html_table, md_table
from jaxprobe.report.tables import write_csv, atomic_write_text

MODEL_NAMES = {"vgg_lstm": "VGG-LSTM", "lstm": "pure-LSTM"}
COND_COLORS = {"clean": "#1a1a1a", 0: "#2c7bb6", 1: "#7b3294", 2: "#d7191c", 3: "#fdae61", 4: "#1b9e3a"}
REGIME_STYLE = {"baseline": {"ls": "--", "marker": "o", "mfc": "white"}, "robust": {"ls": "-", "marker": "s"}}


class HearResultsError(KeyError):
    """results.json of a hear study lacks something the report needs."""


def _need(results, key):
    if key not in results:
        raise HearResultsError(f"The hear results lack '{key}'; re-run `jaxprobe hear` to regenerate results.json.")
    return results[key]


def _conditions(results) -> list[str]:
    return list(results["data"]["conditions"])


def _cond_label(c: str) -> str:
    return "clean" if c == "clean" else f"{c} dB"


def _cond_color(results, c: str) -> str:
    conds = [x for x in _conditions(results) if x != "clean"]
    return COND_COLORS["clean"] if c == "clean" else COND_COLORS[conds.index(c) % 5]


def _models(results) -> list[str]:
    seen = []
    for r in _need(results, "probe"):
        if r["model"] not in seen:
            seen.append(r["model"])
    return seen


def _regimes(results) -> list[str]:
    seen = []
    for r in results["probe"]:
        if r["regime"] not in seen:
            seen.append(r["regime"])
    return seen


def _layers(results, model) -> list[str]:
    return [e["label"] for e in results["layers"][model]]


def _cell(results, model, regime, layer, cond, field="eer"):
    for r in results["probe"]:
        if (r["model"], r["regime"], r["layer"], r["condition"]) == (model, regime, layer, cond):
            return r.get(field)
    return None


def _ref(results, model, regime, layer, cond, field):
    for r in results.get("reference", []):
        if (r["model"], r["regime"], r["layer"], r["condition"]) == (model, regime, layer, cond):
            return r.get(field)
    return None


# ----------------------------------------------------------------------------- figures
def _per_layer_figure(results, out_dir, *, field, stem, title, ylabel, caption, formats, bands=False):
    models = _models(results)
    with style():
        fig = new_figure(PAGE_WIDTH, 2.5)
        axes = fig.subplots(1, len(models), squeeze=False)[0]
        for ax, model in zip(axes, models):
            labels = ["mel"] + _layers(results, model)
            x = np.arange(len(labels))
            for regime in _regimes(results):
                for cond in _conditions(results):
                    def series(f):  # the "mel" reference, then every layer; NaN where absent
                        vals = [_ref(results, model, regime, "mel", cond, f)]
                        vals += [_cell(results, model, regime, lay, cond, f) for lay in labels[1:]]
                        return np.array([np.nan if v is None else v for v in vals], float)

                    st = REGIME_STYLE.get(regime, {})
                    col = _cond_color(results, cond)
                    ax.plot(x, series(field), color=col, ls=st.get("ls", "-"), marker=st.get("marker", "o"),
                            mfc=st.get("mfc", col), ms=3, lw=1.0, label=f"{regime}, {_cond_label(cond)}")
                    if bands:
                        ax.fill_between(x, series(f"{field}_low"), series(f"{field}_high"), color=col, alpha=0.08, lw=0)
            ax.axvline(0.5, color="#999", lw=0.5, ls=":")
            ax.set_xticks(x, ["mel (ref.)"] + labels[1:], rotation=45 if len(labels) > 6 else 0,
                          ha="right" if len(labels) > 6 else "center", rotation_mode="anchor")
            ax.set_title(MODEL_NAMES.get(model, model))
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
    if snr not in _conditions(results):
        snr = [c for c in _conditions(results) if c != "clean"][-1]
    regimes = [r for r in _regimes(results) if f"{model}-{r}" in results.get("mel_examples", {})]
    if not regimes:
        return None
    layers = [lay for lay in rep["fig3_layers"] if lay in _layers(results, model)] or _layers(results, model)[-3:]
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
    return Figure(stem, f"Fig. 3 — what {MODEL_NAMES.get(model, model)} layers hear", png, pdf,
                  f"Log-mel spectrograms of one listening utterance: the clean and the noisy ({snr} dB) recogniser input, "
                  f"and the probe reconstructions from layers {', '.join(layers)} of the {' and '.join(regimes)} "
                  f"{MODEL_NAMES.get(model, model)} given the noisy input (rows). Common colour scale.")


def render_hear_figures(results, out_dir, formats=("png", "pdf"), source=None) -> list[Figure]:
    figs = [fig_eer(results, out_dir, formats), fig_mels(results, out_dir, formats, source),
            fig_stoi(results, out_dir, formats), fig_l1(results, out_dir, formats)]
    if any(r.get("pesq") is not None for r in results.get("probe", [])):  # older results have no PESQ
        figs.insert(3, fig_pesq(results, out_dir, formats))
    hv = human_view(results)
    if hv is not None:
        figs += [fig_eer_human(hv, out_dir, formats), fig_stoi_human(hv, out_dir, formats)]
    return [f for f in figs if f is not None]


def fig_eer_human(view, out_dir, formats=("png", "pdf")) -> Figure:
    """Fig. 2 for the human speakers of the listening set (``view``: :func:`human_view`)."""
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


# ----------------------------------------------------------------------------- tables
def _f(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def asr_rows(results):
    conds = _conditions(results)
    head = ["model", "regime", "steps", "train s", "params", "held-out CER %", "WER %"] + \
           [f"CER % ({_cond_label(c)})" for c in conds]
    rows = []
    for r in _need(results, "asr"):
        rows.append([MODEL_NAMES.get(r["model"], r["model"]), r["regime"], r.get("steps") or "–",
                     _f(r.get("train_seconds"), 0), r.get("n_params") or "–", _f(100 * r["cer"], 1), _f(100 * r["wer"], 1)]
                    + [_f(100 * r["listen"][c]["cer"], 1) if c in r.get("listen", {}) else "–" for c in conds])
    return head, rows


def table2_rows(results):
    """The paper's Table 2: rows (condition, regime), columns model x layer, EER %."""
    models = _models(results)
    head = ["input", "recogniser"] + [f"{MODEL_NAMES.get(m, m)} {lay}" for m in models for lay in ["mel"] + _layers(results, m)]
    rows = []
    for cond in _conditions(results):
        for regime in _regimes(results):
            row = [_cond_label(cond), regime]
            for m in models:
                row.append(_f(_ref(results, m, regime, "mel", cond, "eer"), 1))
                row += [_f(_cell(results, m, regime, lay, cond), 1) for lay in _layers(results, m)]
            rows.append(row)
    return head, rows


def metric_rows(results, field, digits=3):
    models = _models(results)
    head = ["model", "recogniser", "layer"] + [_cond_label(c) for c in _conditions(results)]
    rows = []
    for m in models:
        for regime in _regimes(results):
            for lay in _layers(results, m):
                row = [MODEL_NAMES.get(m, m), regime, lay]
                for c in _conditions(results):
                    e = _cell(results, m, regime, lay, c, field)
                    lo, hi = _cell(results, m, regime, lay, c, f"{field}_low"), _cell(results, m, regime, lay, c, f"{field}_high")
                    if e is None:
                        row.append("–")
                    elif lo is None or hi is None:  # no interval (e.g. an EER from too few trials)
                        row.append(f"{e:.{digits}f}")
                    else:
                        row.append(f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
                rows.append(row)
    return head, rows


def contrast_rows(results, statistic="stoi_robust_minus_baseline", digits=3):
    cons = [c for c in results.get("contrasts", []) if c.get("statistic", statistic) == statistic]
    conds = [c for c in _conditions(results)]
    head = ["model", "layer"] + [_cond_label(c) for c in conds]
    rows, seen = [], []
    for c in cons:
        if (c["model"], c["layer"]) not in seen:
            seen.append((c["model"], c["layer"]))
    for m, lay in seen:
        row = [MODEL_NAMES.get(m, m), lay]
        for cond in conds:
            got = [c for c in cons if (c["model"], c["layer"], c["condition"]) == (m, lay, cond)]
            if not got or got[0]["estimate"] is None:
                row.append("–")
            elif got[0]["low"] is None:
                row.append(f"{got[0]['estimate']:+.{digits}f}")
            else:
                row.append(f"{got[0]['estimate']:+.{digits}f} [{got[0]['low']:+.{digits}f}, {got[0]['high']:+.{digits}f}]")
        rows.append(row)
    return head, rows


def reference_rows(results):
    head = ["model", "recogniser", "reference", "condition", "EER %", "STOI", "PESQ"]
    rows = []
    for r in results.get("reference", []):
        rows.append([MODEL_NAMES.get(r["model"], r["model"]), r["regime"],
                     "input waveform" if r["layer"] == "audio" else "Griffin-Lim of input mel",
                     _cond_label(r["condition"]), _f(r["eer"], 1), _f(r["stoi"], 3),
                     _f(r.get("pesq"), 2)])
    return head, rows


def settings_rows(results):
    s = results["settings"]
    out = []
    for sec in ("data", "conditions", "asr", "speaker", "probe", "listen"):
        for k, v in s.get(sec, {}).items():
            out.append([f"{sec}.{k}", str(v)])
    out.append(["seed", str(s.get("seed"))])
    return ["setting", "value"], out


def data_rows(results):
    d = results["data"]
    rows = [["corpus", d["corpus"]], ["recogniser / speaker-model training utterances", str(d["n_train"])],
            ["ASR held-out utterances", str(d["n_held_out"])],
            ["probe training / validation utterances", f"{d['n_probe_train']} / {d['n_probe_valid']}"],
            ["listening set", f"{d['n_listen']} utterances of {len(d['listen_speakers'])} speakers "
                              f"({', '.join(d['listen_speakers'])})"],
            ["listening noises", ", ".join(d["listen_noises"])], ["conditions", ", ".join(map(_cond_label, d["conditions"]))],
            ["window", f"{d['window_seconds']} s centred per utterance"]]
    sp = results.get("speaker", {})
    pc = lambda v: "–" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    if d.get("n_listen_human"):
        rows.insert(5, ["listening set, human speakers (reported apart)",
                        f"{d['n_listen_human']} held-out studio prompts of {len(d['listen_human_speakers'])} speakers "
                        f"({', '.join(d['listen_human_speakers'])})"])
    if "judge" in sp:
        j, x = sp["judge"], sp.get("xvector", {})
        rows.append(["speaker judge", f"{j['name']} — {j['source']}; trained on {j['training_data']}; {j['licence']}"])
        rows.append(["judge EER, held-out human speech (clean)",
                     f"{pc(j.get('eer_human'))} [{pc(j.get('eer_human_low'))}, {pc(j.get('eer_human_high'))}] "
                     f"({j.get('n_human_utterances') or 0} utterances of {len(j.get('human_speakers') or [])} speakers)"])
        rows.append(["judge EER, clean listening windows (synthetic voices)",
                     f"{pc(j.get('eer_synthetic'))} [{pc(j.get('eer_synthetic_low'))}, {pc(j.get('eer_synthetic_high'))}]"])
        rows.append(["second judge", f"x-vector, {x.get('steps', '?')} steps on {len(x.get('speakers', []))} synthetic "
                                     f"training voices; EER human {pc(x.get('eer_human'))}, synthetic {pc(x.get('eer_synthetic'))}"])
    elif sp:  # results written before the pretrained judge
        rows.append(["speaker model", f"x-vector, {sp.get('steps', '?')} steps on {len(sp.get('speakers', []))} training speakers"])
    return ["", ""], rows


# ----------------------------------------------------------------------------- findings
def _spearman(x, y) -> float:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def findings(results, *, part: str = "synthetic") -> list[str]:
    """Sentences computed from the numbers; the paper's expectations checked, whatever the outcome.
    ``part`` 'human': the same checks on :func:`human_view` (no recogniser or judge sentences)."""
    out = []
    for r in results["asr"] if part == "synthetic" else []:
        out.append(f"{MODEL_NAMES.get(r['model'], r['model'])} {r['regime']}: held-out CER {100 * r['cer']:.1f} %, "
                   f"WER {100 * r['wer']:.1f} % after {r.get('steps')} steps"
                   + (f"; on the listening set CER " + ", ".join(f"{100 * v['cer']:.0f} % ({_cond_label(c)})"
                                                                 for c, v in r.get("listen", {}).items()) if r.get("listen") else "") + ".")
    conds = _conditions(results)
    rises, falls, total = 0, 0, 0
    for m in _models(results):
        lays = _layers(results, m)
        for regime in _regimes(results):
            for c in conds:
                eer = [_cell(results, m, regime, lay, c) for lay in lays]
                st = [_cell(results, m, regime, lay, c, "stoi") for lay in lays]
                if None in eer or None in st:
                    continue
                total += 1
                rho_e, rho_s = _spearman(range(len(lays)), eer), _spearman(range(len(lays)), st)
                rises += rho_e > 0
                falls += rho_s < 0
        first, last = lays[0], lays[-1]
        for regime in _regimes(results):
            e0, e1 = _cell(results, m, regime, first, "clean"), _cell(results, m, regime, last, "clean")
            s0, s1 = _cell(results, m, regime, first, "clean", "stoi"), _cell(results, m, regime, last, "clean", "stoi")
            if None not in (e0, e1, s0, s1):
                out.append(f"{MODEL_NAMES.get(m, m)} {regime}, clean input: EER {e0:.1f} % at {first} → {e1:.1f} % at "
                           f"{last}; STOI {s0:.2f} → {s1:.2f}.")
    if total:
        out.append(f"Expected: EER rises and STOI falls with depth. EER vs layer index has Spearman ρ > 0 in "
                   f"{rises} of {total} (model, recogniser, condition) series; STOI vs layer index ρ < 0 in {falls} of {total}.")
    noisy = [c for c in conds if c != "clean"]
    if noisy and {"baseline", "robust"} <= set(_regimes(results)):
        for m in _models(results):
            lstm = [lay for lay in _layers(results, m) if lay.startswith("blstm")][:2]
            cells = better = 0
            for c in noisy:
                for lay in lstm:
                    b, r = _cell(results, m, "baseline", lay, c, "stoi"), _cell(results, m, "robust", lay, c, "stoi")
                    if b is not None and r is not None:
                        cells += 1
                        better += r > b
            con = {(c["layer"], c["condition"]): c for c in results.get("contrasts", [])
                   if c["model"] == m and c.get("statistic", "stoi_robust_minus_baseline") == "stoi_robust_minus_baseline"}
            paired = [con[(lay, c)] for c in noisy for lay in lstm if (lay, c) in con]
            if paired:  # paired (same utterances) intervals of robust - baseline
                above = sum(c["low"] > 0 for c in paired)
                below = sum(c["high"] < 0 for c in paired)
                parts = [f"{c['layer']} at {_cond_label(c['condition'])}: {c['estimate']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"
                         for c in paired]
                out.append(f"Expected: the robust model's early LSTM layers remove more noise than the baseline's "
                           f"(higher STOI of their reconstructions from noisy input). {MODEL_NAMES.get(m, m)}: robust "
                           f"higher in {better} of {cells} cells; the paired robust − baseline interval lies above 0 in "
                           f"{above} and below 0 in {below} of {len(paired)} — paired STOI differences: "
                           + "; ".join(parts) + ".")
            eb = [_cell(results, m, "baseline", lay, c) for c in noisy for lay in _layers(results, m)]
            er = [_cell(results, m, "robust", lay, c) for c in noisy for lay in _layers(results, m)]
            if None not in eb and None not in er:
                econ = [c for c in results.get("contrasts", []) if c["model"] == m and c["condition"] in noisy
                        and c.get("statistic") == "eer_robust_minus_baseline" and c["low"] is not None]
                paired = ""
                if econ:
                    paired = (f" Paired robust − baseline EER intervals (same utterances) lie below 0 in "
                              f"{sum(c['high'] < 0 for c in econ)} and above 0 in {sum(c['low'] > 0 for c in econ)} "
                              f"of {len(econ)} (layer, noisy condition) cells.")
                out.append(f"{MODEL_NAMES.get(m, m)}: mean EER over layers and noisy conditions, robust {np.mean(er):.1f} % vs "
                           f"baseline {np.mean(eb):.1f} % (the paper: the robust model keeps more speaker information "
                           "in noise, i.e. lower EER)." + paired)
    sp = [r for r in results.get("reference", []) if r["layer"] == "audio" and r["condition"] == "clean"]
    if sp:
        who = "synthetic voices" if part == "synthetic" else "human speakers"
        out.append(f"Speaker judge on the unprocessed clean listening windows ({who}): EER {sp[0]['eer']:.1f} % "
                   f"{_interval_pct(sp[0].get('eer_low'), sp[0].get('eer_high'))}"
                   "(the floor every layer's EER is read against).")
    if part != "synthetic":
        return out
    j = results.get("speaker", {}).get("judge", {})
    if j.get("eer_human") is not None:
        x = results["speaker"].get("xvector", {})
        syn = "" if j.get("eer_synthetic") is None else (
            f"; on the clean synthetic listening windows (voices it never saw) {100 * j['eer_synthetic']:.1f} % "
            f"{_interval_frac(j.get('eer_synthetic_low'), j.get('eer_synthetic_high'))}")
        xs = "" if x.get("eer_human") is None else (
            f" The x-vector trained here: {100 * x['eer_human']:.1f} % {_interval_frac(x.get('eer_human_low'), x.get('eer_human_high'))}"
            f"on the human speech" + ("" if x.get("eer_synthetic") is None else
                                      f", {100 * x['eer_synthetic']:.1f} % on the synthetic voices it was trained on") + ".")
        out.append(f"The judge ({j['name']}; {j['training_data']}) on the corpus's held-out human speech, clean: EER "
                   f"{100 * j['eer_human']:.1f} % {_interval_frac(j.get('eer_human_low'), j.get('eer_human_high'))}"
                   f"({j.get('n_human_utterances')} utterances of {len(j.get('human_speakers') or [])} speakers)"
                   f"{syn}.{xs}")
    return out


def _interval_pct(lo, hi) -> str:
    return "" if lo is None or hi is None else f"[{lo:.1f}, {hi:.1f}] "


def _interval_frac(lo, hi) -> str:
    return "" if lo is None or hi is None else f"[{100 * lo:.1f}, {100 * hi:.1f}] "


def human_view(results) -> dict | None:
    """``results`` with the human speakers' records in place of the synthetic voices' (``probe_human``
    as ``probe``, ...), so every table and figure function draws them; None when there are none."""
    if not results.get("probe_human"):
        return None
    return {**results, "probe": results["probe_human"], "reference": results.get("reference_human", []),
            "contrasts": results.get("contrasts_human", [])}


# ----------------------------------------------------------------------------- writing
def write_hear_csvs(results, out) -> dict[str, Path]:
    out = Path(out)
    probe_cols = ["model", "regime", "layer", "layer_index", "r", "condition", "snr", "l1", "l1_low", "l1_high",
                  "stoi", "stoi_low", "stoi_high", "pesq", "pesq_low", "pesq_high", "pesq_excluded", "eer", "eer_low",
                  "eer_high", "min_dcf_0.01", "min_dcf_0.01_low", "min_dcf_0.01_high", "min_dcf_0.001",
                  "min_dcf_0.001_low", "min_dcf_0.001_high", "eer_xvector", "n_items"]
    asr = [{k: v for k, v in r.items() if k != "listen"} | {f"cer_{c}": v["cer"] for c, v in r.get("listen", {}).items()}
           | {f"wer_{c}": v["wer"] for c, v in r.get("listen", {}).items()} for r in results["asr"]]
    h, rows = table2_rows(results)
    t2 = [dict(zip(h, row)) for row in rows]
    human = {}
    hv = human_view(results)
    if hv is not None:  # the human speakers, apart
        h2, rows2 = table2_rows(hv)
        human = {"probe_human": write_csv(out / "probe_human.csv", probe_cols, hv["probe"]),
                 "table2_human": write_csv(out / "table2_human.csv", h2, [dict(zip(h2, row)) for row in rows2]),
                 "contrasts_human": write_csv(out / "contrasts_human.csv",
                                               ["model", "layer", "condition", "statistic", "estimate", "low", "high"],
                                               hv["contrasts"])}
    return {**human, "probe": write_csv(out / "probe.csv", probe_cols, results["probe"]),
            "reference": write_csv(out / "reference.csv", ["model", "regime", "layer", "condition", "eer", "eer_low",
                                                            "eer_high", "stoi", "pesq"],
                                    results.get("reference", [])),
            "asr": write_csv(out / "asr.csv", ["model", "regime", "cer", "wer"], asr),
            "table2": write_csv(out / "table2.csv", h, t2),
            "contrasts": write_csv(out / "contrasts.csv", ["model", "layer", "condition", "statistic", "estimate", "low", "high"],
                                    results.get("contrasts", []))}


def _human_sections(results, figures) -> list:
    """The human speakers of the listening set, apart from the synthetic voices (none: [])."""
    hv = human_view(results)
    if hv is None:
        return []
    note = results.get("human_note") or ""
    return [("list", "Human speakers of the listening set (reported apart)", [note] + findings(hv, part="human")),
            ("figures", "Figures (human speakers)", figures),
            ("table", "Table 2 (human speakers) — EER (%) on speech reconstructed from each layer", table2_rows(hv)),
            ("table", "Human speakers: EER % of the reconstructions ([95 % bootstrap interval, utterances resampled])",
             metric_rows(hv, "eer", 1)),
            *[("table", f"Human speakers: normalised minDCF, P_target {p:g} ([95 % bootstrap interval])",
               metric_rows(hv, f"min_dcf_{p:g}", 3)) for p in _dcf_priors(hv)],
            ("table", "Human speakers: second judge (x-vector) EER % ([95 % bootstrap interval])",
             metric_rows(hv, "eer_xvector", 1)),
            ("table", "Human speakers: STOI (mean [95 % bootstrap interval over utterances])", metric_rows(hv, "stoi")),
            ("table", "Human speakers: wide-band PESQ (mean [95 % bootstrap interval over utterances])",
             metric_rows(hv, "pesq")),
            ("table", "Human speakers: robust − baseline STOI, paired ([95 % bootstrap interval])", contrast_rows(hv)),
            ("table", "Human speakers: robust − baseline EER (points), paired ([95 % bootstrap interval])",
             contrast_rows(hv, "eer_robust_minus_baseline", 1)),
            ("table", "Human speakers: references", reference_rows(hv))]


def _sections(results, figures):
    human_figs = [f for f in figures if f.key.endswith("_human")]
    figures = [f for f in figures if not f.key.endswith("_human")]
    return [("list", "Findings", findings(results)),
            ("table", "Data", data_rows(results)),
            ("table", "Recognisers: CER / WER (greedy CTC decoding, jiwer)", asr_rows(results)),
            ("figures", "Figures", figures),
            ("table", "Table 2 — speaker-verification EER (%) on speech reconstructed from each layer", table2_rows(results)),
            ("table", "Speaker-verification EER % of the reconstructions ([95 % bootstrap interval, utterances "
                      "resampled])", metric_rows(results, "eer", 1)),
            *[("table", f"Normalised minDCF of the reconstructions, P_target {p:g}, C_miss = C_fa = 1 ([95 % bootstrap "
                        "interval, the EER's resamples]; 1 = no better than a trivial system)",
               metric_rows(results, f"min_dcf_{p:g}", 3)) for p in _dcf_priors(results)],
            ("table", "Second judge: x-vector (trained here on the synthetic training voices) EER % of the "
                      "reconstructions ([95 % bootstrap interval])", metric_rows(results, "eer_xvector", 1)),
            ("table", "STOI of the reconstructions (mean [95 % bootstrap interval over utterances])", metric_rows(results, "stoi")),
            ("table", "Wide-band PESQ of the reconstructions (mean over the items PESQ could score [95 % bootstrap "
                      "interval over utterances])", metric_rows(results, "pesq")),
            ("table", "Items PESQ could not score (silence or too short), excluded from the PESQ means",
             metric_rows(results, "pesq_excluded", 0)),
            ("table", "Probe L1 error (log-mel, mean [interval])", metric_rows(results, "l1")),
            ("table", "Robust − baseline STOI, paired over the same utterances (mean [95 % bootstrap interval])",
             contrast_rows(results)),
            ("table", "Robust − baseline wide-band PESQ, paired over the utterances PESQ scored for both recognisers "
                      "(mean [95 % bootstrap interval])", contrast_rows(results, "pesq_robust_minus_baseline")),
            ("table", "Robust − baseline EER (percentage points), paired over the same utterances and trials "
                      "([95 % bootstrap interval])", contrast_rows(results, "eer_robust_minus_baseline", 1)),
            ("table", "References: the unprocessed input and Griffin-Lim of the input mel", reference_rows(results)),
            *_human_sections(results, human_figs),
            ("table", "Appendix: settings", settings_rows(results))]


def _dcf_priors(results) -> list[float]:
    """The P_target values of the minDCF fields the probe records carry (none in older results)."""
    keys = {k for r in results.get("probe", []) for k in r if k.startswith("min_dcf_") and not k.endswith(("_low", "_high"))}
    return sorted((float(k[len("min_dcf_"):]) for k in keys), reverse=True)


def is_hear_results(results) -> bool:
    return isinstance(results, dict) and "asr" in results and "probe" in results


def write_hear_report(results, out_dir, *, formats=("png", "pdf"), source=None) -> dict[str, Path]:
    """report.md, report.html (self-contained), CSV tables and figures of a hear study.
    ``source``: the study folder holding ``listen/*-mels.npz`` (default ``out_dir``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _sections(results, [])  # validate before drawing
    figures = render_hear_figures(results, out / "figures", formats, source=source if source is not None else out)
    secs = _sections(results, figures)
    csvs = write_hear_csvs(results, out)
    title = "What does a layer hear? Probing CTC recognisers by reconstruction"
    md = [f"# {title}\n"]
    page = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for kind, head, payload in secs:
        md.append(f"## {head}\n")
        page.append(f"<h2>{html.escape(head)}</h2>")
        if kind == "table":
            md.append(md_table(*payload))
            page.append(html_table(*payload))
        elif kind == "list":
            md.append("\n".join(f"- {s}" for s in payload) + "\n")
            page.append("<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in payload) + "</ul>")
        else:
            for f in payload:
                rel = os.path.relpath(f.png, out)
                md.append(f"### {f.title}\n\n![{f.title}]({rel})\n\n{f.caption}\n")
                data = base64.b64encode(Path(f.png).read_bytes()).decode("ascii")
                page.append(f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
                            f"<figcaption><b>{html.escape(f.title)}.</b> {html.escape(f.caption)}</figcaption></figure>")
    files = [os.path.relpath(p, out) for p in csvs.values()] + ["results.json", "wavs/<model>-<regime>/<condition>/"]
    if human_view(results) is not None:
        files.append("wavs-human/<model>-<regime>/<condition>/")
    md.append("## Files\n\n" + "\n".join(f"- `{p}`" for p in files) + "\n")
    page.append('<h2>Files</h2><p class="small">' + ", ".join(html.escape(p) for p in files)
                + "; figures (PNG, PDF) in figures/.</p></body></html>")
    paths = {"md": atomic_write_text(out / "report.md", "\n".join(md)),
             "html": atomic_write_text(out / "report.html", "\n".join(page)),
             **{f"{k}_csv": p for k, p in csvs.items()}}
    for f in figures:
        for p in (f.png, f.pdf):
            if p is not None:
                paths[f"figures/{Path(p).name}"] = Path(p)
    return paths
