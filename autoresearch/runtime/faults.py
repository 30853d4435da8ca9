"""Named points of a trial and a search where crash tests strike.

    faults.point('mid-checkpoint')   # does nothing, unless a test replaced `point`

The points, in the order a search reaches them: 'mid-compile' (a trial's build
starts), 'train' (its first step was read), 'mid-eval' (its evaluation starts),
'mid-checkpoint' (the search's checkpoint is being written), 'after-checkpoint',
'ledger-write' (before each ledger row). Tests replace `point` with a hook that kills
the process or fills the disk at the N-th time a point is reached
(tests/helpers/faults.py); call it as `faults.point(...)` so the replacement is seen.
"""


def point(name: str) -> None:
  """A named fault point: nothing happens in production."""
  del name
