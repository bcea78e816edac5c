"""swelab: a notebook workbench for evaluating LLM coding agents on SWE-bench."""

__version__ = "0.1.0"
