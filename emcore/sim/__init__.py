"""Simulated example datasets with ground truth: HRTEM nanoparticle, EDS + HAADF, drift movie.

One module per simulator (:mod:`~emcore.sim.hrem`, :mod:`~emcore.sim.eds`,
:mod:`~emcore.sim.movie`) and the examples table the app and CLI offer
(:mod:`~emcore.sim.examples`). Every simulator takes an explicit seed or
``numpy.random.Generator``; the same seed gives the same arrays.
"""

from emcore.sim.eds import eds_example, three_phase_cube
from emcore.sim.examples import EXAMPLES, ExampleInfo, example
from emcore.sim.hrem import CONTRAST_MODES, HREM_OPTIONS, hrem_example, hrem_phantom
from emcore.sim.movie import movie_example

__all__ = ["CONTRAST_MODES", "EXAMPLES", "ExampleInfo", "HREM_OPTIONS", "eds_example", "example", "hrem_example",
           "hrem_phantom", "movie_example", "three_phase_cube"]
