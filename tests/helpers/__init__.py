"""What several test modules share: the project's folder, fault hooks (faults.py) and
the scripts that tests run in a process of their own."""

import os


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
