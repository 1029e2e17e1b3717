"""imagehost: a self-hosted image host on Twisted."""

__version__ = "0.1.0"
