"""Stage 8b, adapt: refit a run's temperatures and operating points on a site's own labelled films.

``adapt_run(RUN, DATA, OUT)`` changes no weights: it measures how the site's scores moved,
refits what the decision step applies, and writes a new run that evaluate, predict and
export take like any other. It sits after ``evaluate`` (it reuses the patient bootstrap) and
before ``predict``.
"""

from __future__ import annotations

from cxrad.adapt.refit import MIN_NEGATIVES, MIN_POSITIVES, AdaptReport, adapt_logits, adapt_run
from cxrad.adapt.site import SiteFilms, load_site
from cxrad.models.shift import score_reference, score_shift

__all__ = [
    "MIN_NEGATIVES",
    "MIN_POSITIVES",
    "AdaptReport",
    "SiteFilms",
    "adapt_logits",
    "adapt_run",
    "load_site",
    "score_reference",
    "score_shift",
]
