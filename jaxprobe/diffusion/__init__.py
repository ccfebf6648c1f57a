"""Diffusion maps (Coifman & Lafon 2006) and the SE paper's diffusion analyses.

* ``map.py``: :class:`DiffusionMap`, :func:`diffusion_map` (one jitted call over a batch of
  clouds; the conventions are in its module docstring) and the batched solver;
* ``_checks.py``: argument validation, the solver choice, the degeneracy warnings;
* ``extend.py``: :func:`diffusion_distances` and the Nystrom extension :func:`diffusion_nystrom`;
* ``analysis.py``: the paper's intra-layer and inter-layer analyses;
* ``sharded.py``: :func:`sharded_diffusion_map`, the batch of clouds split over a device mesh;
* ``bootstrap.py``: the geometry bootstrap (``from jaxprobe.diffusion import bootstrap``).
"""
from jaxprobe.diffusion._checks import check_clouds
from jaxprobe.diffusion.analysis import (InterLayerResult, IntraLayerResult, group_membership, inter_layer, intra_layer,
                                         intra_layer_by_name)
from jaxprobe.diffusion.extend import diffusion_distances, diffusion_nystrom
from jaxprobe.diffusion.map import DiffusionMap, diffusion_map, diffusion_map_batched
from jaxprobe.diffusion.sharded import sharded_diffusion_map

__all__ = [
    "DiffusionMap",
    "InterLayerResult",
    "IntraLayerResult",
    "check_clouds",
    "diffusion_distances",
    "diffusion_map",
    "diffusion_map_batched",
    "diffusion_nystrom",
    "group_membership",
    "inter_layer",
    "intra_layer",
    "intra_layer_by_name",
    "sharded_diffusion_map",
]
