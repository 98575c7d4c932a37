"""autoif: code-verified instruction-following data from any LLM (AutoIF), with training and evaluation."""

__version__ = "0.1.0"
