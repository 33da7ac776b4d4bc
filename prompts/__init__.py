"""Versioned prompt templates and instruction libraries (data files) and their loaders."""
