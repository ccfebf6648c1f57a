"""Dataset readers: each yields :class:`AudioRecord` (id, speaker, mono float32 16 kHz
waveform, sample rate, transcript) and validates what it reads."""
from .demand import Demand
from .folder import AudioFolder
from .librispeech import LibriSpeech
from .musan import Musan
from .record import AudioDataset, AudioError, AudioRecord, check_waveform, read_audio, resample
from .voicebank import VoiceBank

__all__ = ["AudioDataset", "AudioError", "AudioFolder", "AudioRecord", "Demand", "LibriSpeech",
           "Musan", "VoiceBank", "check_waveform", "read_audio", "resample"]
