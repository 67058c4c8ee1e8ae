"""Lets `python -m llmfleet` run the CLI."""

import sys

from llmfleet.cli import main

sys.exit(main())
