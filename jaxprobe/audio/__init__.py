"""Listening to probes: STFT / iSTFT, mel filterbanks and log-mel, mel -> linear inversion,
Griffin-Lim, and STOI. Spectrograms put frames on axis -2 and frequency on axis -1."""
from jaxprobe.audio.griffinlim import griffin_lim, mel_to_waveform, spectral_convergence
from jaxprobe.audio.mel import (MelConfig, hz_to_mel, log_mel_spectrogram, mel_filterbank, mel_from_log,
                                mel_spectrogram, mel_to_hz, mel_to_linear)
from jaxprobe.audio._stft import hann_window, istft, stft
from jaxprobe.audio._stoi import stoi

__all__ = [
    "MelConfig",
    "griffin_lim",
    "hann_window",
    "hz_to_mel",
    "istft",
    "log_mel_spectrogram",
    "mel_filterbank",
    "mel_from_log",
    "mel_spectrogram",
    "mel_to_hz",
    "mel_to_linear",
    "mel_to_waveform",
    "spectral_convergence",
    "stft",
    "stoi",
]
