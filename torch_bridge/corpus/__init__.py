"""The embedded default corpus: synthetic English speech (flite, espeak-ng), real studio
prompts (asterisk core sounds) and real plus synthetic noise, built from Debian packages
into a cache folder with a checksummed manifest. See :mod:`torch_bridge.corpus.build`."""
from .build import SIZES, BuildReport, Corpus, CorpusError, CorpusSpec, build_corpus, default_cache_dir, load_corpus
from .noises import NOISE_TYPES
from .speech import VOICES, MissingDependencyError

__all__ = ["NOISE_TYPES", "SIZES", "VOICES", "BuildReport", "Corpus", "CorpusError", "CorpusSpec",
           "MissingDependencyError", "build_corpus", "default_cache_dir", "load_corpus"]
