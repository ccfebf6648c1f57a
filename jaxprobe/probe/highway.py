"""The paper's frame-wise reconstruction probe: up-sampling linear, Highway network, linear out.

A layer that runs ``r`` times slower than the mel frames (``r`` = its time-downsampling factor)
gives one activation vector per ``r`` mel frames. The probe maps each activation frame on its own
(no context across frames, as the paper requires) to ``r`` mel frames:

    h (T, H) --Dense(H -> r*width)--> (T, r*width) --reshape--> (T*r, width)
             --4 x Highway(width)--> --Dense(width -> n_mels)--> (T*r, n_mels)

With the default ``width = n_mels = 80`` the first layer is the paper's "linear from the hidden size
to 80*r". Activation frame ``t`` produces mel frames ``t*r ... t*r + r - 1``.

Written with ``flax.linen``: its parameters are a plain pytree, so the probes of many layers stack
into one tree and train under ``jax.vmap`` with optax and orbax as they are, without the graph/state
split that ``flax.nnx`` needs before a ``vmap`` or a checkpoint.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


class Highway(nn.Module):
    """One Highway layer (Srivastava et al. 2015): ``y = g * relu(W_h x) + (1 - g) * x``.

    The gate ``g = sigmoid(W_g x + b_g)`` starts with bias ``gate_bias`` (negative: the layer starts
    close to the identity, which keeps a deep stack trainable).

    Parameters
    ----------
    width : int
        Feature size of input and output.
    gate_bias : float
        Initial bias of the transform gate.
    """

    width: int
    gate_bias: float = -1.0

    @nn.compact
    def __call__(self, x):
        """x : array of shape (..., width) -> array of shape (..., width)."""
        h = nn.relu(nn.Dense(self.width, name="transform")(x))
        g = nn.sigmoid(nn.Dense(self.width, bias_init=nn.initializers.constant(self.gate_bias), name="gate")(x))
        return g * h + (1.0 - g) * x


class Upsample(nn.Module):
    """Linear up-sampling of a slower layer: ``(..., T, H) -> (..., T*rate, width)``."""

    rate: int
    width: int = 80

    @nn.compact
    def __call__(self, h):
        y = nn.Dense(self.rate * self.width, name="dense")(h)
        return y.reshape(*y.shape[:-2], y.shape[-2] * self.rate, self.width)


class HighwayBody(nn.Module):
    """``n_highway`` Highway layers (each its own weights) and a linear output:
    ``(..., N, width) -> (..., N, n_mels)``."""

    width: int = 80
    n_mels: int = 80
    n_highway: int = 4
    gate_bias: float = -1.0

    @nn.compact
    def __call__(self, x):
        for i in range(self.n_highway):
            x = Highway(self.width, self.gate_bias, name=f"highway_{i}")(x)
        return nn.Dense(self.n_mels, name="out")(x)


class HighwayProbe(nn.Module):
    """The full probe for one layer: :class:`Upsample` then :class:`HighwayBody`.

    Parameters
    ----------
    rate : int
        Time-downsampling factor ``r`` of the probed layer relative to the mel frames.
    width : int
        Width of the Highway network (80 = the paper's ``80*r`` up-sampling output).
    n_mels : int
        Mel bins of the reconstructed frames.
    n_highway : int
        Number of Highway layers (the paper: 4).
    gate_bias : float
        Initial transform-gate bias of each Highway layer.

    Call with ``h`` : array of shape (..., T, H); returns array of shape (..., T*rate, n_mels).
    The parameters are ``{"up": ..., "body": ...}``.
    """

    rate: int = 1
    width: int = 80
    n_mels: int = 80
    n_highway: int = 4
    gate_bias: float = -1.0

    def setup(self):
        self.up = Upsample(self.rate, self.width)
        self.body = HighwayBody(self.width, self.n_mels, self.n_highway, self.gate_bias)

    def __call__(self, h):
        return self.body(self.up(h))


def init_probe(key, hidden: int, *, rate: int = 1, width: int = 80, n_mels: int = 80, n_highway: int = 4,
               gate_bias: float = -1.0, dtype=jnp.float32):
    """Initial parameters of one layer's probe.

    Parameters
    ----------
    key : jax PRNG key
    hidden : int
        Width ``H`` of the probed activations.

    Returns
    -------
    params : pytree ``{"up": {...}, "body": {...}}`` with leaves of ``dtype``.
    """
    module = HighwayProbe(rate, width, n_mels, n_highway, gate_bias)
    params = module.init(key, jnp.zeros((1, hidden), dtype))["params"]
    return jax.tree.map(lambda a: a.astype(dtype), params)


def apply_probe(params, h, *, rate: int = 1, width: int = 80, n_mels: int = 80, n_highway: int = 4,
                gate_bias: float = -1.0):
    """Reconstruct mel frames from one layer's activations.

    h : array of shape (..., T, H) -> array of shape (..., T*rate, n_mels).
    """
    module = HighwayProbe(rate, width, n_mels, n_highway, gate_bias)
    return module.apply({"params": params}, h)
