"""sequencer: a polite email follow-up daemon."""

__version__ = "0.1.0"
