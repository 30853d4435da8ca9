"""autoresearch: a perpetual search for better training recipes of a small GPT.

Packages, lowest layer first (a module imports only from its own layer or below):
runtime, data, space, trial, workdir, early_stop, agents, views, search, synthetic; then
`modes` and `pretrain`, which `main.py` calls. README.md's "Layout" says what each holds.
"""

import os


PROJECT_FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout
